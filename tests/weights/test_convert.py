"""Key mapping errors, and full-size original-format checkpoints loaded through
`weights=<path>.pth` at several input sizes."""

import json
import re

import numpy as np
import pytest

import keras_pf
from keras_pf.models.layers import resize_grid
from keras_pf.weights import (CheckpointError, WeightMappingError, load_state_dict,
                              load_torch_weights)
from keras_pf_cli import main as cli_main

from conftest import PARITY_KEYS, ParityCase
import torch_format


@pytest.fixture
def resnet_case():
    case = ParityCase("resnet_max_64")
    return case, load_state_dict(case.checkpoint)


def _assert_unchanged(model, before):
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_unknown_key_is_named(resnet_case):
    case, state = resnet_case
    model = case.build()
    before = [v.numpy() for v in model.weights]
    state = dict(state, **{"layer9.0.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightMappingError, match=r"layer9\.0\.extra\.weight"):
        load_torch_weights(model, state)
    _assert_unchanged(model, before)  # nothing assigned before the whole mapping checked


def test_missing_key_names_the_keras_weight(resnet_case):
    case, state = resnet_case
    model = case.build()
    state = {k: v for k, v in state.items() if k != "layer3.0.expansion_block.1.running_var"}
    with pytest.raises(WeightMappingError, match="conv4_block1_3_bn/moving_variance"):
        load_torch_weights(model, state)


def test_mis_shaped_key_names_both_shapes_and_the_model(resnet_case):
    case, state = resnet_case
    model = case.build(name="my_model")
    with pytest.raises(WeightMappingError, match=r"my_model.*`fc\.weight`.*\(10, 512\).*\(512, 7\)"):
        load_torch_weights(case.build(name="my_model", classes=7), state)
    wrong = ParityCase("resnet_plain_64")  # plain checkpoint into a max-pool model
    with pytest.raises(WeightMappingError, match="conv_block"):
        load_torch_weights(model, load_state_dict(wrong.checkpoint))


def test_checkpoint_of_another_family(resnet_case):
    case, _ = resnet_case
    vit = load_state_dict(ParityCase("vit_max_64").checkpoint)
    with pytest.raises(WeightMappingError):
        load_torch_weights(case.build(), vit)


@pytest.mark.parametrize("original,constructor,input_shape", [
    ("resnet50_max", "PFResNet50Max", (193, 257, 3)),
    ("resnet50_hybrid", "PFResNet50Hybrid", (256, 192, 3)),
    ("pit_s_max", "PFPiTSmall", (256, 256, 3)),
    ("vit_s_max", "PFViTSmall", (288, 224, 3)),
])
def test_full_size_checkpoint_at_other_input_sizes(tmp_path, original, constructor, input_shape):
    """A full-size checkpoint in the original file format (random tensors) loads through
    `weights=<path>` at a non-default size; tensors land transposed, the position
    embedding resized with PyTorch's bicubic kernel."""
    keys = json.loads((PARITY_KEYS / f"{original}.json").read_text())["state_dict"]
    state = torch_format.random_state_dict(keys, seed=1)
    path = torch_format.save(state, tmp_path / f"{original}.pth")
    model = keras_pf.MODELS[constructor](weights=str(path), input_shape=input_shape)
    assert model(np.zeros((1, *input_shape), "float32")).shape == (1, 1000)
    if original.startswith("resnet"):
        np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(),
                                      state["conv1.0.weight"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(model.get_layer("conv1_bn").moving_variance.numpy(),
                                      state["conv1.1.running_var"])
        return
    grid = state["pos_embed"]
    grid = grid.transpose(0, 2, 3, 1) if grid.ndim == 4 else grid.reshape(1, 14, 14, -1)
    embedding = model.get_layer("pos_embed").embedding
    expected_hw = (input_shape[0] - 16) // 8 + 1 if original.startswith("pit") else input_shape[0] // 16, \
        (input_shape[1] - 16) // 8 + 1 if original.startswith("pit") else input_shape[1] // 16
    assert tuple(embedding.shape[1:3]) == expected_hw
    np.testing.assert_allclose(embedding.numpy(), resize_grid(grid, expected_hw), atol=1e-6)


def test_cli_convert_writes_a_loadable_file_and_nothing_on_failure(tmp_path, capsys):
    keys = json.loads((PARITY_KEYS / "resnet50_max.json").read_text())["state_dict"]
    ckpt = torch_format.save(torch_format.random_state_dict(keys), tmp_path / "r50max.pth")
    out = tmp_path / "out" / "pf_resnet50_max.weights.h5"
    assert cli_main(["convert", "PFResNet50Max", str(ckpt), str(out)]) == 0
    a = keras_pf.PFResNet50Max(weights=str(ckpt))
    b = keras_pf.PFResNet50Max(weights=str(out))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-6)

    bad = tmp_path / "bad.weights.h5"
    assert cli_main(["convert", "PFResNet50Hybrid", str(ckpt), str(bad)]) == 2
    assert "has no tensor for the Keras weights" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r50max.pth"]
    assert cli_main(["convert", "PFResNet50Max", str(ckpt), str(tmp_path / "x.h5")]) == 2
    assert "weights.h5" in capsys.readouterr().err


# --- checkpoint errors through every entry point (issue 10) --------------------------


@pytest.mark.parametrize("value, message", [
    (np.float32("nan"), "NaN or infinite"), (np.float32("inf"), "NaN or infinite"),
    (None, "int32 values where the model needs floats")])
def test_nan_inf_and_integer_weights_are_named(resnet_case, value, message):
    case, state = resnet_case
    state = dict(state)
    if value is None:
        state["fc.weight"] = state["fc.weight"].astype(np.int32)
    else:
        state["fc.weight"] = state["fc.weight"].copy()
        state["fc.weight"][3, 4] = value
    model = case.build()
    before = [v.numpy() for v in model.weights]
    with pytest.raises(CheckpointError, match=rf"`fc\.weight`.*{message}"):
        load_torch_weights(model, state)
    _assert_unchanged(model, before)


def _hostile_checkpoints(tmp_path):
    """A file past its storage (a SIGSEGV before), and one with a pickle opcode outside
    the allow-list (a raw TypeError before)."""
    oob = torch_format.save({"conv1.0.weight": torch_format.Raw(
        bytes(16), 4, 0, (2, 2), (-2 ** 40, 1))}, tmp_path / "oob.pth")
    opcode = torch_format.write_archive(tmp_path / "obj.pth", {
        "archive/data.pkl": b"\x80\x02(ccollections\nOrderedDict\no."})
    return {"outside its storage|negative": oob, "OBJ": opcode}


def test_every_entry_point_gives_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from keras_pf.weights import registry
    from conftest import load_tool

    for message, path in _hostile_checkpoints(tmp_path).items():
        out = tmp_path / "out.weights.h5"
        assert cli_main(["convert", "PFResNet50Max", str(path), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err, err
        assert re.search(message, err) and not out.exists(), err
        with pytest.raises(CheckpointError, match=message):
            keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25,
                              input_shape=(32, 32, 3), classes=10, weights=str(path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    assert cli_main(["weights", "import", str(path), "--model", "pf_resnet50_max"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OBJ" in err and "Traceback" not in err, err
    assert not list((tmp_path / "keras_home").rglob("*.h5"))
    folder = tmp_path / "originals"
    folder.mkdir()
    (folder / "pf_resnet50_max_long.pth").write_bytes(path.read_bytes())
    monkeypatch.setattr(registry, "write_table", lambda: pytest.fail("registry written"))
    with pytest.raises(CheckpointError, match="OBJ"):  # its __main__ prints it as one line
        load_tool("convert_weights").main([str(folder), "--output", str(tmp_path / "pub")])
    assert not list((tmp_path / "pub").iterdir())


def test_cli_convert_a_generic_builder_checkpoint_with_model_args(tmp_path, capsys):
    case = ParityCase("resnet_max_64")
    cfg = case.config
    args = {"block": cfg["block"], "depths": cfg["layers"], "width_mult": cfg["width_mult"],
            "classes": cfg["num_classes"], "classifier_activation": None}
    out = tmp_path / "generic.weights.h5"
    assert cli_main(["convert", "PFResNet", str(case.checkpoint), str(out), "--input-size", "64",
                     "--model-args", json.dumps(args)]) == 0
    model = case.build()
    model.load_weights(str(out))
    np.testing.assert_allclose(np.asarray(model(case.input_nhwc)), case.logits, atol=1e-4)
    for bad in ["{not json", '["a list"]', '{"no_such_argument": 1}']:
        try:  # bad JSON: the parser's usage error; an unknown argument: the builder's check
            status = cli_main(["convert", "PFResNet", str(case.checkpoint),
                               str(tmp_path / "b.weights.h5"), "--model-args", bad])
        except SystemExit as exit:
            status = exit.code
        assert status == 2
        assert "--model-args" in capsys.readouterr().err
    assert not (tmp_path / "b.weights.h5").exists()
