"""Smoke test of the benchmark (`keras_pf/benchmark.py`) at a tiny size: it must write
its three outputs with figures that agree with `keras_pf.benchmark.profile` and with each other."""

import json
import os

import numpy as np
import pytest

import keras_pf
from keras_pf.benchmark import profile
from keras_pf.benchmark import run as benchmark

from conftest import load_tool, tiny_resnet


def _tiny(block):
    return lambda size: tiny_resnet(block, size)


def _report(tmp_path_factory, fidelity):
    out = tmp_path_factory.mktemp("bench")
    builders = {"tiny_plain": _tiny("plain"), "tiny_max": _tiny("max")}
    result = benchmark.benchmark_models(list(builders), image_size=64, runs=2, warmup=1,
                                        builders=builders, reference="tiny_plain",
                                        output_dir=str(out), log=lambda *_: None,
                                        op_profile_models=["tiny_max"],
                                        fidelity_models=["tiny_max"] if fidelity else (),
                                        fidelity_size=32, fidelity_epochs=1)
    return out, result, builders


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _report(tmp_path_factory, fidelity=False)


@pytest.fixture(scope="module")
def fidelity_report(tmp_path_factory):
    """The same run with the int8 fidelity study (a fine-tune and every precision's
    file on held-out images): the slow tier."""
    return _report(tmp_path_factory, fidelity=True)


def test_writes_json_markdown_and_plot(report):
    out, result, _ = report
    with open(out / "results.json") as f:
        assert json.load(f) == json.loads(json.dumps(result))
    markdown = (out / "results.md").read_text()
    for text in ("tiny_plain", "tiny_max", "TFLite int8 (ms)", "Keras xla (ms)", "Keras folded (ms)",
                 result["machine"]["cpu"], "(0.", "(1.00x)"):
        assert text in markdown
    with open(out / "top1_vs_latency.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in os.listdir(out) if n.startswith(".tmp_")]


def test_figures_agree_with_profile_and_are_sane(report):
    _, result, builders = report
    for name, builder in builders.items():
        model = builder(64)
        row = result["models"][name]
        assert row["params"] == profile.count_params(model) > 0
        assert row["flops"] == profile.count_flops(model) > 0
        assert set(row["keras"]) == set(benchmark.KERAS_MODES) == {"compiled", "folded", "xla"}
        assert all(0 < s < 10 for s in row["keras"].values())
        assert set(row["tflite"]) == set(benchmark.PRECISIONS)
        for precision, measured in row["tflite"].items():
            assert 0 < measured["seconds"] < 10, precision
            assert measured["file_mb"] > 0 and measured["peak_memory_mb"] > 0, precision
        sizes = {p: row["tflite"][p]["file_mb"] for p in benchmark.PRECISIONS}
        # float16 halves the weights, dynamic and int8 quarter them
        assert sizes["dynamic"] < sizes["float16"] < sizes["float32"]
        assert sizes["int8"] < 0.6 * sizes["float32"]
    # R50-max drops every 3x3 conv: fewer parameters and MACs than the plain network
    plain, pool = result["models"]["tiny_plain"], result["models"]["tiny_max"]
    assert pool["params"] < plain["params"] and pool["flops"] < plain["flops"]


def test_ratios_are_computed_pair_by_pair(report):
    _, result, _ = report
    ref = result["models"]["tiny_plain"]
    for row in result["models"].values():
        ratio = row["ratio_to_tiny_plain"]
        assert ratio["params"] == pytest.approx(row["params"] / ref["params"])
        assert ratio["flops"] == pytest.approx(row["flops"] / ref["flops"])
        for mode, seconds in row["keras"].items():
            fastest = row["keras_min"][mode]
            assert ratio["keras_min"][mode] == pytest.approx(fastest / ref["keras_min"][mode])
            assert 0 < fastest <= seconds
            assert ratio["keras"][mode] == pytest.approx(seconds / ref["keras"][mode])
        for precision, measured in row["tflite"].items():
            assert 0 < measured["seconds_min"] <= measured["seconds"]
            for key in ("seconds", "seconds_min", "file_mb", "peak_memory_mb"):
                expected = measured[key] / ref["tflite"][precision][key]
                assert ratio["tflite"][precision][key] == pytest.approx(expected)
    assert all(v == pytest.approx(1.0) for v in (ref["ratio_to_tiny_plain"]["params"],
                                                 ref["ratio_to_tiny_plain"]["flops"]))


def test_reported_top1_comes_from_the_registry_and_baselines():
    assert benchmark.reported_top1("ResNet50") == {"keras.applications": 74.9}
    hybrid = benchmark.reported_top1("PFResNet50Hybrid")
    assert 77.1 in hybrid.values() and 78.0 in hybrid.values()
    assert max(benchmark.reported_top1("PFPiTSmall").values()) == 80.8
    assert benchmark.reported_top1("tiny_plain") == {}


def test_measure_latency_modes():
    model = _tiny("max")(32)
    for mode in ("eager", "compiled", "xla"):
        assert 0 < profile.measure_latency(model, runs=2, warmup=1, mode=mode) < 10
    with pytest.raises(ValueError, match="mode"):
        profile.measure_latency(model, mode="fast")
    x = profile.random_batch(model)
    np.testing.assert_allclose(profile.compiled_predict(model)(x),
                               np.asarray(model(x, training=False)), rtol=1e-4, atol=1e-5)


def test_bad_arguments_give_clear_errors(capsys):
    import keras_pf_cli as cli

    assert cli.main(["benchmark", "--models", "ResNet5O", "--precisions", "--keras-modes",
                     "--output-dir", os.devnull + "_unused"]) == 2
    assert "Unknown model 'ResNet5O'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="runs >= 1"):
        benchmark.benchmark_models(["ResNet50"], runs=0)
    assert load_tool("benchmark").main(["--models", "NoSuchNet", "--precisions", "--keras-modes"]) == 2


def test_float32_graph_has_folded_batchnorm_and_runs_in_xnnpack(report):
    out, result, _ = report
    markdown = (out / "results.md").read_text()
    for name, row in result["models"].items():
        ops = row["tflite_float32_ops"]
        assert ops.get("CONV_2D", 0) > 0, name
        # BN folded into the convolutions, ReLU fused, NHWC throughout, static shapes
        for op in ("MUL", "SUB", "RSQRT", "RELU", "TRANSPOSE", "SHAPE", "STRIDED_SLICE"):
            assert op not in ops, (name, op)
        # every precision's file, int8 with its softmax head included
        assert row["tflite_undelegated_ops"] == {p: {} for p in benchmark.PRECISIONS}, name
        assert "outside XNNPACK: none." in markdown


# ------------------------------------------------------------------------- op profile


def test_op_profile_in_the_report(report):
    out, result, _ = report
    prof = result["models"]["tiny_max"]["op_profile"]
    assert "op_profile" not in result["models"]["tiny_plain"]
    assert prof["seconds"] == pytest.approx(sum(g["seconds"] for g in prof["by_kind"].values()))
    assert prof["seconds"] == pytest.approx(sum(row["seconds"] for row in prof["layers"]))
    assert all(0 < row["seconds"] < 1 for row in prof["layers"])
    # every multiply-accumulate of the model is in a profiled op
    assert sum(g["macs"] for g in prof["by_kind"].values()) == result["models"]["tiny_max"]["flops"]
    assert {"Conv2D 1x1", "MaxPooling2D", "Add"} <= set(prof["by_kind"])
    assert "Where the TFLite float32 time goes" in (out / "results.md").read_text()


def test_export_layers_writes_each_op_alone_with_the_models_weights(tmp_path):
    from keras_pf.mobile.check import run_tflite, tflite_ops

    model = _tiny("max")(64)
    files = benchmark.export_layers(model, str(tmp_path))
    names = {layer.name for layer, _ in files}
    kinds = {type(layer).__name__ for layer, _ in files}
    # BatchNorm is folded into its conv, ReLU fused into its conv or add, and the zero
    # pad before the stem conv fused by XNNPACK: none of them is an op of its own
    assert not kinds & {"BatchNormalization", "ReLU", "InputLayer"}
    assert "conv1_pad" not in names and "conv3_block1_2_pad" in names  # pad before a pool
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert set(convs) <= names
    expected_op = {"Conv2D": "CONV_2D", "MaxPooling2D": "MAX_POOL_2D", "Add": "ADD",
                   "ZeroPadding2D": "PAD", "Dense": "FULLY_CONNECTED"}
    for layer, path in files:
        kind = type(layer).__name__
        if kind in expected_op:  # the classifier's softmax comes with its Dense
            assert tflite_ops(path) in ([expected_op[kind]], [expected_op[kind], "SOFTMAX"])
    layer, path = next((l, p) for l, p in files if l.name == "conv3_block1_3_conv")
    x = np.random.default_rng(0).normal(size=(1, *layer.input.shape[1:])).astype("float32")
    np.testing.assert_allclose(run_tflite(path, x), np.asarray(layer(x)), rtol=1e-4, atol=1e-4)


def test_export_layers_handles_attention(tmp_path):
    model = keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, input_shape=(32, 32, 3),
                           classes=10, weights=None)
    files = benchmark.export_layers(model, str(tmp_path))
    kinds = {benchmark.layer_kind(layer) for layer, _ in files}  # FastMaxPooling2D: MaxPooling2D
    assert {"MultiHeadAttention", "MaxPooling2D", "BroadcastSafeLayerNormalization", "Dense"} <= kinds
    assert all(os.path.getsize(path) > 0 for _, path in files)


def test_op_profile_and_fidelity_argument_errors(capsys):
    import keras_pf_cli as cli

    with pytest.raises(ValueError, match="--op-profile model 'PFViTSmall'"):
        benchmark.benchmark_models(["ResNet50"], op_profile_models=["PFViTSmall"])
    assert cli.main(["benchmark", "--models", "ResNet50", "--op-profile", "NoSuchNet",
                     "--precisions", "--keras-modes"]) == 2
    assert "NoSuchNet" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--int8-fidelity model 'PFViTSmall'"):
        benchmark.benchmark_models(["ResNet50"], fidelity_models=["PFViTSmall"])
    assert cli.main(["benchmark", "--models", "ResNet50", "--int8-fidelity", "NoSuchNet",
                     "--precisions", "--keras-modes"]) == 2
    assert "NoSuchNet" in capsys.readouterr().err


# ------------------------------------------------------- precisions and int8 fidelity


def test_fastest_precision_and_own_ratios_in_the_report(report):
    out, result, _ = report
    markdown = (out / "results.md").read_text()
    for name, row in result["models"].items():
        times = {p: m["seconds"] for p, m in row["tflite"].items()}
        fastest = min(times, key=times.get)
        assert benchmark.fastest_precision(row) == fastest
        own = benchmark.precision_ratios(row)
        assert own["int8"] == pytest.approx(times["int8"] / times["float32"])
        assert own["int8_vs_dynamic"] == pytest.approx(times["int8"] / times["dynamic"])
        row_line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} | –"))
        assert f"**{times[fastest] * 1e3:.1f} (" in row_line  # bold in the main table
        own_line = next(line for line in markdown.splitlines()
                        if line.startswith(f"| {name} | {times['float32'] * 1e3:.1f} |"))
        assert own_line.endswith(f"| {fastest} |") and f"{own['int8']:.2f}x" in own_line


@pytest.mark.slow
def test_int8_fidelity_on_the_trained_model_in_the_report(fidelity_report):
    out, result, _ = fidelity_report
    assert "fidelity" not in result["models"]["tiny_plain"]
    fidelity = result["models"]["tiny_max"]["fidelity"]
    assert fidelity["epochs"] == 1 and fidelity["images"]["test"] > 0
    assert 0 <= fidelity["keras_top1"] <= 1
    assert fidelity["float32"]["top1_agreement"] == 1.0
    assert fidelity["float32"]["relative_error"] < 1e-4
    for precision in benchmark.PRECISIONS:
        measured = fidelity[precision]
        assert 0 <= measured["top1"] <= 1 and 0 <= measured["top1_agreement"] <= 1
        assert 0 <= measured["mean_abs_error"] <= measured["max_abs_error"]
    # int8 differs from float32 (it is really quantized) but not wildly
    assert 0 < fidelity["int8"]["relative_error"] < 0.5
    markdown = (out / "results.md").read_text()
    assert "Fidelity of each file on a trained model" in markdown
    int8 = fidelity["int8"]
    assert (f"{100 * int8['top1_agreement']:.1f}% / {100 * int8['relative_error']:.2f}%"
            in next(line for line in markdown.splitlines() if line.startswith("| tiny_max | ")
                    and "% / " in line))


def test_help_names_the_default_models_the_library_uses():
    """`--help` must not import keras_pf (nor TensorFlow), so the command spells the
    default list out: it must stay the library's."""
    import argparse

    from keras_pf_cli import benchmark as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    (models,) = [action for action in parser._actions if "--models" in action.option_strings]
    assert models.help.endswith("default: " + " ".join(benchmark.DEFAULT_MODELS))
