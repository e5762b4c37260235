"""`keras-pf benchmark --train` (keras_pf/benchmark/train.py) at a tiny size: the bound
networks must really have free max-pools and otherwise be the same network, and the
report must hold every model, its bound, ratios, gaps and the target check."""

import json

import numpy as np
import pytest

import keras

import keras_pf
from keras_pf.benchmark import train as benchmark_train
from keras_pf.models.layers import FastGroupedConv2D, FastMaxPooling2D

from conftest import tiny_resnet


def assert_one_line_usage_error(capsys, argv, needle):
    """`keras-pf ARGV` in this process: exit 2 and one stderr line naming `needle`."""
    from keras_pf_cli import main

    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def _tiny_resnet(block):
    return lambda size: tiny_resnet(block, size)


def _tiny_vit(size):
    return keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, patch_size=8, weights=None,
                          input_shape=(size, size, 3), classes=10)


def test_bound_of_r50_max_frees_every_pool_and_keeps_the_rest():
    model = _tiny_resnet("max")(64)
    bound = benchmark_train.bound_network(model)
    pools = {layer.name: layer for layer in model.layers if isinstance(layer, FastMaxPooling2D)}
    # stem + 4 bottlenecks; 3 of them strided (stem, stages 2-4), 2 at stride 1
    assert benchmark_train.pool_counts(model) == {"stride_1": 1, "strided": 4, "subsampled": 0}
    assert benchmark_train.pool_counts(bound) == {"stride_1": 0, "strided": 0, "subsampled": 4}
    for name, pool in pools.items():
        free = bound.get_layer(name)
        if max(pool.strides) == 1:
            assert type(free) is keras.layers.Identity
        else:
            # a strided slice: exactly what a 1x1-window pool of that stride keeps
            assert type(free).__name__ == "Subsample" and not free.weights
            assert tuple(free.strides) == tuple(pool.strides)
            pooled = keras.layers.MaxPooling2D(1, strides=pool.strides)(free.input)
            assert tuple(free.output.shape) == tuple(pooled.shape)
            x = np.random.default_rng(1).normal(size=(2, *free.input.shape[1:]))
            np.testing.assert_array_equal(np.asarray(free(x)), np.asarray(
                keras.layers.MaxPooling2D(1, strides=pool.strides)(x)))
            pad = name[:-len("_pool")] + "_pad"
            assert type(bound.get_layer(pad)) is keras.layers.Identity
        assert tuple(free.output.shape) == tuple(pool.output.shape)
    # everything else: same layers, same weights
    others = [layer.name for layer in model.layers if layer.name not in pools
              and not layer.name.endswith("_pad")
              and not isinstance(layer, keras.layers.InputLayer)]
    for name in others:
        assert type(bound.get_layer(name)) is type(model.get_layer(name)), name
        for a, b in zip(model.get_layer(name).get_weights(), bound.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # conv paddings stay (only those feeding pools go)
    assert type(bound.get_layer("conv1_pad")) is keras.layers.ZeroPadding2D
    assert model.count_params() == bound.count_params()
    # the bound is the same function once the pools are free: identity where stride 1
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype("float32")
    assert np.asarray(bound(x)).shape == np.asarray(model(x)).shape


def test_bound_of_vit_and_models_without_pools():
    bound = benchmark_train.bound_network(_tiny_vit(32))
    assert not [l for l in bound.layers if isinstance(l, keras.layers.MaxPooling2D)]
    assert type(bound.get_layer("block1_mixer_pool")) is keras.layers.Identity
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(ValueError, match="has no MaxPooling2D layer"):
        benchmark_train.bound_network(keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)))


@pytest.mark.parametrize("family, swapped", [
    ("r50_max", {FastMaxPooling2D: (keras.layers.MaxPooling2D, 5)}),
    ("pit", {FastMaxPooling2D: (keras.layers.MaxPooling2D, 2),
             FastGroupedConv2D: (keras.layers.Conv2D, 1)})])
def test_keras_layers_twin_swaps_only_the_fast_layers(family, swapped, tiny_family):
    """The "(keras layers)" study: keras' own MaxPooling2D and Conv2D in place of every
    FastMaxPooling2D and FastGroupedConv2D, same config and weights; every other layer
    and weight as the model's, and the same values."""
    model = _tiny_resnet("max")(32) if family == "r50_max" else tiny_family(family)
    twin = benchmark_train.keras_layers_network(model)
    for fast, (builtin, count) in swapped.items():
        layers = [layer for layer in model.layers if type(layer) is fast]
        assert len(layers) == count, fast
        for layer in layers:
            other = twin.get_layer(layer.name)
            assert type(other) is builtin
            assert other.get_config() == layer.get_config()
    for layer in model.layers[1:]:  # after the input layer, whose name the clone's lacks
        other = twin.get_layer(layer.name)
        if type(layer) not in swapped:
            assert type(other) is type(layer), layer.name
        assert len(layer.weights) == len(other.weights), layer.name
        for a, b in zip(layer.get_weights(), other.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not [l for l in twin.layers if type(l) in (FastMaxPooling2D, FastGroupedConv2D)]
    assert twin.count_params() == model.count_params()
    x = np.random.default_rng(0).uniform(0, 1, (2, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(np.asarray(twin(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)


def test_keras_layers_twin_needs_a_fast_layer():
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.MaxPooling2D(2)(inputs))
    with pytest.raises(ValueError, match="has no FastMaxPooling2D or FastGroupedConv2D"):
        benchmark_train.keras_layers_network(plain)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    builders = {"tiny_plain": _tiny_resnet("plain"), "PFResNet50Max": _tiny_resnet("max"),
                "tiny_vit": _tiny_vit}
    result = benchmark_train.benchmark_training(
        list(builders)[1:], image_size=32, batch_size=2, rounds=2, warmup=0,
        keras_layers=True, builders=builders, reference="tiny_plain", output_dir=str(out),
        log=lambda *_: None)
    return out, result


def test_report_structure(report):
    out, result = report
    rows = result["models"]
    assert list(rows) == ["tiny_plain", "PFResNet50Max", "PFResNet50Max (bound)",
                          "PFResNet50Max (keras layers)", "tiny_vit", "tiny_vit (bound)",
                          "tiny_vit (keras layers)"]  # reference added first
    assert result["machine"]["backend"] == keras.backend.backend()
    assert result["machine"]["batch_size"] == 2 and result["machine"]["jit_compile"] is False
    for name, row in rows.items():
        for kind in ("train", "predict"):
            assert len(row[kind]["rounds"]) == 2
            assert 0 < row[kind]["seconds_min"] <= row[kind]["seconds"] < 60
            assert row[kind]["images_per_second"] == pytest.approx(2 / row[kind]["seconds"])
            assert row["ratio"][kind] == pytest.approx(
                row[kind]["seconds"] / rows["tiny_plain"][kind]["seconds"])
        assert row["study"] == name.endswith(("(bound)", "(keras layers)"))
    assert rows["tiny_plain"]["ratio"]["train"] == 1
    assert "gap_to_bound" not in rows["tiny_plain"]
    gap = rows["PFResNet50Max"]["gap_to_bound"]["train"]
    assert gap == pytest.approx(rows["PFResNet50Max"]["ratio"]["train"]
                                - rows["PFResNet50Max (bound)"]["ratio"]["train"])
    assert rows["PFResNet50Max"]["target"] == {"train_gap_at_most": 0.04, "met": gap <= 0.04}
    assert "target" not in rows["tiny_vit"]  # the target is set for the ResNets only
    assert rows["PFResNet50Max (bound)"]["bound_of"] == "PFResNet50Max"
    low, high = rows["PFResNet50Max"]["train_gap_interval_95"]
    assert low <= high and "train_gap_interval_95" not in rows["tiny_plain"]
    # the keras-layers twins: gain = twin's ratio minus the model's, with its interval
    for name in ("PFResNet50Max", "tiny_vit"):
        twin = rows[name + " (keras layers)"]
        assert twin["keras_layers_of"] == name and "gain_over_keras_layers" not in twin
        for kind in ("train", "predict"):
            assert rows[name]["gain_over_keras_layers"][kind] == pytest.approx(
                twin["ratio"][kind] - rows[name]["ratio"][kind])
        gain_low, gain_high = rows[name]["train_gain_interval_95"]
        assert gain_low <= gain_high
    assert "gain_over_keras_layers" not in rows["tiny_plain"]
    assert result["machine"]["keras_layers"] is True
    with open(out / "train_tensorflow.json") as f:
        assert json.load(f) == json.loads(json.dumps(result))
    markdown = (out / "train_tensorflow.md").read_text()
    for text in ("| *PFResNet50Max (bound)* |", "| tiny_vit |", "(1.00x)", "not a model",
                 "met" if gap <= 0.04 else "not met", "no XLA", f"[{low:+.3f}, {high:+.3f}]",
                 "| *tiny_vit (keras layers)* |", "Train gain over keras layers",
                 f"{rows['tiny_vit']['gain_over_keras_layers']['train']:+.3f} ["):
        assert text in markdown
    # without the twins the report has no gain columns
    plain = json.loads(json.dumps(result))
    plain["machine"]["keras_layers"] = False
    plain["models"] = {n: r for n, r in plain["models"].items() if "keras layers" not in n}
    for row in plain["models"].values():
        row.pop("gain_over_keras_layers", None)
    assert "gain" not in benchmark_train.format_markdown(plain)
    # the title says what Keras resolved "auto" to: XLA on JAX, eager elsewhere
    assert result["machine"]["jit_compile_requested"] == "auto"
    on_jax = json.loads(json.dumps(result))
    on_jax["machine"].update(backend="jax", jit_compile=True)
    title = benchmark_train.format_markdown(on_jax).splitlines()[0]
    assert "jax backend, XLA (Keras' default" in title and "no XLA" not in title
    on_jax["machine"].update(jit_compile=False)  # e.g. a report of an eager JAX run
    assert "jax backend, no XLA" in benchmark_train.format_markdown(on_jax)
    # the versions are those of the backend's framework
    import tensorflow as tf

    assert f"TensorFlow {tf.__version__}, Keras" in markdown
    on_torch = json.loads(json.dumps(result))
    on_torch["machine"].update(backend="torch", torch="9.9.9")
    title = benchmark_train.format_markdown(on_torch).splitlines()[0]
    assert "torch backend, no XLA" in title and "PyTorch 9.9.9, Keras" in title


def test_gap_interval_resamples_whole_rounds():
    rng = np.random.default_rng(3)
    # no noise: the interval is the gap itself
    assert benchmark_train.gap_interval([1.1] * 5, [1.0] * 5, [2.0] * 5) == \
        pytest.approx((0.05, 0.05))
    # a load shared by the three within each round (0.5x-2x) cancels: rounds stay together
    load = rng.uniform(0.5, 2.0, 16)
    low, high = benchmark_train.gap_interval(1.1 * load, 1.0 * load, 2.0 * load)
    assert low == pytest.approx(0.05) and high == pytest.approx(0.05)
    # independent noise: the interval holds the true gap (0.05) and narrows with rounds
    def noisy(rounds):
        times = [scale * rng.lognormal(0, 0.2, rounds) for scale in (1.1, 1.0, 2.0)]
        low, high = benchmark_train.gap_interval(*times)
        return low, high
    short, long = noisy(8), noisy(128)
    assert short[0] < 0.05 < short[1] and long[0] < 0.05 < long[1]
    assert long[1] - long[0] < 0.5 * (short[1] - short[0])
    with pytest.raises(ValueError):
        benchmark_train.gap_interval([1.0, 2.0], [1.0], [1.0, 2.0])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="rounds >= 1"):
        benchmark_train.benchmark_training(["ResNet50"], rounds=0, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown model 'Nope'"):
        benchmark_train.benchmark_training(["Nope"], output_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, needle", [
    (["--jit"], "--jit"),
    (["--batch-size", "4"], "--batch-size"),
    (["--train", "--batch-size", "0"], "--batch-size"),
    (["--train", "--precisions", "int8"], "--precisions"),
    (["--train", "--op-profile"], "--op-profile"),
    (["--keras-layers"], "--keras-layers"),
])
def test_cli_options_of_the_other_mode_are_usage_errors(capsys, tmp_path, argv, needle):
    assert_one_line_usage_error(capsys, ["benchmark", *argv, "--output-dir", str(tmp_path)], needle)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, expected, keras_layers", [
    ([], "auto", False), (["--jit"], True, False), (["--keras-layers"], "auto", True)])
def test_cli_train_compiles_as_fit_does_unless_jit(monkeypatch, tmp_path, argv, expected,
                                                   keras_layers):
    """Without --jit the steps are compiled as `fit` compiles them by default
    (jit_compile="auto": XLA on JAX); an earlier False made JAX's steps eager."""
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(benchmark_train, "benchmark_training", fake)
    from keras_pf_cli import main

    with pytest.raises(SystemExit):
        main(["benchmark", "--train", *argv, "--models", "ResNet50", "--output-dir",
              str(tmp_path)])
    assert seen["jit_compile"] == expected and seen["keras_layers"] is keras_layers


def test_cli_train_unknown_model_is_one_line(capsys, tmp_path):
    assert_one_line_usage_error(capsys, ["benchmark", "--train", "--models", "Nope",
                                         "--output-dir", str(tmp_path)], "Unknown model 'Nope'")
    assert not list(tmp_path.iterdir())
