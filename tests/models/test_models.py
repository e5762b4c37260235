"""Named constructors and generic builders: keras.applications conventions, key
coverage of the original full-size state dicts, parameter counts, save/load, fit."""

import json

import numpy as np
import pytest

import keras
import keras_pf
from keras_pf.benchmark.profile import count_params
from keras_pf.weights.convert import torch_to_keras

from conftest import PARITY_KEYS

# original constructor (keys/<name>.json) -> our named constructor
ORIGINALS = {
    "resnet50": "PFResNet50Plain",
    "resnet50_max": "PFResNet50Max",
    "resnet50_hybrid": "PFResNet50Hybrid",
    "vit_ti_max": "PFViTTiny",
    "vit_s_max": "PFViTSmall",
    "vit_b_max": "PFViTBase",
    "pit_ti_max": "PFPiTTiny",
    "pit_s_max": "PFPiTSmall",
    "pit_b_max": "PFPiTBase",
}


@pytest.mark.parametrize("original,constructor", sorted(ORIGINALS.items()))
def test_full_size_key_mapping_and_parameter_count(original, constructor):
    keys = json.loads((PARITY_KEYS / f"{original}.json").read_text())
    model = keras_pf.MODELS[constructor](weights=None)
    assert count_params(model) == keys["parameters"]
    # A distinct value per tensor, so that a tensor mapped twice or to the wrong
    # place shows up in the values, not only in the bookkeeping.
    state = {}
    for i, (key, shape, _) in enumerate(keys["state_dict"]):
        state[key] = np.full(shape, i, np.float32)
    values = torch_to_keras(model, state)
    assert sorted(values) == sorted(v.path for v in model.weights)
    used = {int(v.flat[0]) for v in values.values() if v.size}
    expected = {i for i, (key, _, _) in enumerate(keys["state_dict"])
                if not key.endswith("num_batches_tracked")}
    assert used == expected  # every original tensor landed somewhere
    for variable in model.weights:
        assert values[variable.path].shape == tuple(variable.shape)


def test_pf_resnet50_is_the_hybrid():
    a = keras_pf.PFResNet50(weights=None)
    b = keras_pf.PFResNet50Hybrid(weights=None)
    assert [l.name for l in a.layers[1:]] == [l.name for l in b.layers[1:]]
    assert a.name == "pf_resnet50_hybrid" and count_params(a) == 17_330_600


@pytest.mark.parametrize("pooling,expected", [(None, (2, 2, 2, 512)), ("avg", (2, 512)), ("max", (2, 512))])
def test_include_top_false_pooling_shapes(small_resnet, pooling, expected):
    model = small_resnet(include_top=False, pooling=pooling)
    assert model(np.zeros((2, 64, 64, 3), "float32")).shape == expected


@pytest.mark.parametrize("builder,kwargs,channels,grid", [
    (keras_pf.PFViT, dict(embed_dim=48, depth=2, num_heads=3), 48, 4),
    (keras_pf.PFPiT, dict(base_dims=(16, 16), depths=(1, 1), heads=(1, 2)), 32, 4),
])
def test_transformer_backbone_shapes(builder, kwargs, channels, grid):
    for pooling, shape in ((None, (1, grid, grid, channels)), ("avg", (1, channels)), ("max", (1, channels))):
        model = builder(**kwargs, include_top=False, pooling=pooling, weights=None, input_shape=(64, 64, 3))
        assert model(np.zeros((1, 64, 64, 3), "float32")).shape == shape


def test_resnet_backbone_default_input_is_dynamic():
    model = keras_pf.PFResNet50Max(include_top=False, weights=None)
    assert model.input_shape == (None, None, None, 3)
    assert keras_pf.PFResNet50Max(weights=None).input_shape == (None, 224, 224, 3)


def test_input_tensor_is_used():
    inp = keras.Input((64, 64, 3))
    model = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25,
                              input_tensor=inp, include_top=False, weights=None)
    assert model.inputs[0] is inp


def test_keras_applications_errors():
    with pytest.raises(ValueError, match="`classes` should be 1000"):
        keras_pf.PFResNet50Max(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="`weights` argument should be"):
        keras_pf.PFResNet50Max(weights=42)
    with pytest.raises(ValueError, match="weights file not found: /no/such/file.pth"):
        keras_pf.PFResNet50Max(weights="/no/such/file.pth")
    with pytest.raises(ValueError, match="at least 32x32"):
        keras_pf.PFResNet50Max(weights=None, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="3 channels"):
        keras_pf.PFResNet50Max(weights="imagenet", input_shape=(224, 224, 1), include_top=False)
    with pytest.raises(ValueError, match="Only `None` and `softmax`"):
        keras_pf.PFResNet50Max(weights="imagenet", classifier_activation="relu")
    with pytest.raises(ValueError, match="pooling"):
        keras_pf.PFResNet50Max(weights=None, include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="fixed input height and width"):
        keras_pf.PFViTTiny(weights=None, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="block"):
        keras_pf.PFResNet(block="avg", weights=None)


@pytest.mark.parametrize("shape", [(225, 224, 3), (240, 240, 3)])
def test_hybrid_needs_multiples_of_32(shape):
    with pytest.raises(ValueError, match="multiples of 32"):
        keras_pf.PFResNet50Hybrid(weights=None, input_shape=shape)


def test_user_name_does_not_change_weights_lookup(tmp_path, parity_case_resnet_hybrid):
    """Renaming the model must not change which weights load (a keras.applications bug)."""
    case = parity_case_resnet_hybrid
    a = case.build(weights=str(case.checkpoint), name="my_renamed_model")
    assert a.name == "my_renamed_model"
    np.testing.assert_allclose(a.predict(case.input_nhwc, verbose=0), case.logits, atol=1e-4)


@pytest.mark.parametrize("fmt", ["keras", "weights.h5"])
def test_save_and_load(tmp_path, parity_case_pit, fmt):
    case = parity_case_pit
    model = case.build(weights=str(case.checkpoint))
    path = tmp_path / f"model.{fmt}"
    if fmt == "keras":
        model.save(path)
        loaded = keras.saving.load_model(path)
    else:
        model.save_weights(path)
        loaded = case.build(weights=str(path))
    np.testing.assert_allclose(loaded.predict(case.input_nhwc, verbose=0), case.logits, atol=1e-4)


def test_weights_file_loads_at_another_input_size(tmp_path):
    """A .weights.h5 saved at 64x64 (the checkpoint's own size) loads into a 96x96 build
    with the position embedding resized as the original does at run time."""
    from conftest import ParityCase

    big = ParityCase("pit_max_96_resized_pos_embed")
    small = big.build(weights=str(big.checkpoint), input_shape=(64, 64, 3))
    assert small.get_layer("pos_embed").embedding.shape == (1, 7, 7, 16)
    path = tmp_path / "pit64.weights.h5"
    small.save_weights(path)
    model = big.build(weights=str(path))
    assert model.get_layer("pos_embed").embedding.shape == (1, 11, 11, 16)
    np.testing.assert_allclose(model.predict(big.input_nhwc, verbose=0), big.logits, atol=1e-4)


def test_two_step_fit_of_a_new_head(small_resnet):
    backbone = small_resnet(include_top=False, pooling="avg")
    backbone.trainable = False
    outputs = keras.layers.Dense(3, activation="softmax")(backbone.output)
    model = keras.Model(backbone.input, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    head = model.layers[-1]
    before = [np.array(w) for w in head.get_weights()]
    frozen = [np.array(w) for w in backbone.get_weights()]
    x = np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 3)).astype("float32")
    history = model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, head.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(frozen, backbone.get_weights()))


def test_model_code_uses_no_tensorflow():
    """Model definitions stay backend-agnostic: Keras layers and keras.ops only."""
    import pathlib
    import re

    package = pathlib.Path(keras_pf.__file__).parent / "models"
    for name in ("pf_resnet.py", "pf_vit.py", "pf_pit.py", "layers.py", "application.py"):
        source = (package / name).read_text()
        assert not re.search(r"^\s*(import tensorflow|from tensorflow)|\btf\.", source, re.M), name


def test_keras_weights_file_of_another_configuration_raises(tmp_path, small_resnet):
    path = tmp_path / "notop.weights.h5"
    small_resnet(include_top=False).save_weights(path)
    with pytest.raises(ValueError, match="does not fit model"):
        small_resnet(weights=str(path))  # the head would stay random: refuse
    with pytest.raises(ValueError, match="does not fit model"):
        small_resnet(block="plain", weights=str(path), include_top=False)
    full = tmp_path / "full.weights.h5"
    reference = small_resnet()
    reference.save_weights(full)
    backbone = small_resnet(weights=str(full), include_top=False)  # keras.applications-like
    np.testing.assert_array_equal(backbone.get_layer("conv1_conv").kernel.numpy(),
                                  reference.get_layer("conv1_conv").kernel.numpy())
