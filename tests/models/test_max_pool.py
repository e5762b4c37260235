"""keras_pf.models.layers.FastMaxPooling2D: keras' max-pool with the mask gradient under XLA.

The forward must be keras' MaxPooling2D bit for bit; the gradient the framework's where
each window's maximum is unique, and at ties the whole of a window's gradient on its
first maximal element in row-major order (checked element by element, independently of
any framework); "auto" must pick the mask gradient exactly under XLA."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_pf.models import layers as pf_layers
from keras_pf.models.layers import FastMaxPooling2D, mask_max_pool, max_pool_gradient
from max_pool_cases import CONFIGS  # tests/helpers



def _pool(config, gradient, dtype=None):
    pool_size, strides, padding = config
    layer = FastMaxPooling2D(pool_size, strides=strides, padding=padding, dtype=dtype)
    layer.gradient = gradient
    return layer


def _forward_and_gradient(layer, x, upstream=None, jit=False):
    """`(y, dL/dx)` for L = sum(y * upstream) (upstream: fixed random weights)."""
    x = tf.constant(x)

    @tf.function(jit_compile=jit)
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            weights = upstream if upstream is not None else tf.ones_like(y)
            loss = tf.reduce_sum(y * tf.cast(weights, y.dtype))
        return y, tape.gradient(loss, x)

    y, grad = run(x)
    return y.numpy(), grad.numpy()


def _windows(config, in_hw):
    """For each output (i, j): the input positions of its window, in row-major order."""
    pool_size, strides, padding = config
    (kh, kw) = pool_size if isinstance(pool_size, tuple) else (pool_size, pool_size)
    (sh, sw) = strides if isinstance(strides, tuple) else (strides, strides)
    geometry = [pf_layers._pool_geometry(n, k, s, padding)[:2]
                for n, k, s in zip(in_hw, (kh, kw), (sh, sw))]
    (oh, ph), (ow, pw) = geometry
    windows = {}
    for i in range(oh):
        for j in range(ow):
            windows[i, j] = [(i * sh + a - ph, j * sw + b - pw) for a in range(kh) for b in range(kw)
                             if 0 <= i * sh + a - ph < in_hw[0] and 0 <= j * sw + b - pw < in_hw[1]]
    return windows


def assert_routed_to_first_maximum(config, x, y, gradient_of):
    """`gradient_of(upstream)` -> dL/dx for L = sum(y * upstream): for every output
    element, a one-hot upstream must give a one-hot gradient with value 1 at the
    window's first maximal element (row-major). x: (1, H, W, C)."""
    _, h, w, c = x.shape
    windows = _windows(config, (h, w))
    for (i, j), window in windows.items():
        for ch in range(c):
            upstream = np.zeros(y.shape, x.dtype)
            upstream[0, i, j, ch] = 1
            grad = gradient_of(upstream)[0, :, :, ch]
            values = [x[0, p, q, ch] for p, q in window]
            first = window[int(np.argmax(np.asarray(values) == y[0, i, j, ch]))]
            expected = np.zeros((h, w), x.dtype)
            expected[first] = 1
            assert y[0, i, j, ch] == max(values)
            np.testing.assert_array_equal(grad, expected, err_msg=f"output {(i, j, ch)}")
            assert grad.sum() == 1  # the window's whole gradient, once


def _tied_input(shape, seed=0):
    """Few distinct values (many ties, equal windows), some -inf."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype("float32")
    x[0, 0, :, 0] = -np.inf  # a row whose windows may be all -inf
    return x


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_and_config_are_keras_max_pool(config):
    x = np.random.default_rng(1).normal(size=(2, 9, 11, 3)).astype("float32")
    mine, keras_pool = _pool(config, "mask"), keras.layers.MaxPooling2D(*config)
    y, _ = _forward_and_gradient(mine, x)
    np.testing.assert_array_equal(y, np.asarray(keras_pool(x)))
    config_keras = keras_pool.get_config()
    config_mine = mine.get_config()
    config_keras.pop("name"), config_mine.pop("name")
    assert config_mine == config_keras


@pytest.mark.parametrize("config", CONFIGS)
def test_gradient_equals_framework_where_maximum_is_unique(config):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 10, 9, 4)).astype("float32")  # continuous: unique maxima
    framework = _pool(config, "framework")
    upstream = rng.uniform(0.5, 1.5, framework.compute_output_shape(x.shape)).astype("float32")
    _, expected = _forward_and_gradient(framework, x, upstream)
    _, grad = _forward_and_gradient(_pool(config, "mask"), x, upstream)
    # equal up to the order in which overlapping windows' upstreams are summed
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)
    assert np.count_nonzero(grad) == np.count_nonzero(expected)


@pytest.mark.parametrize("config", CONFIGS)
def test_gradient_at_ties_goes_to_the_first_maximal_element(config):
    x = _tied_input((1, 6, 7, 2))
    layer = _pool(config, "mask")
    y = np.asarray(keras.layers.MaxPooling2D(*config)(x))
    # one one-hot upstream per batch element: every output's gradient in one call
    pooled, offsets = mask_max_pool(tf.constant(x), layer.pool_size, layer.strides,
                                    layer.padding)
    np.testing.assert_array_equal(np.asarray(pooled), y)
    assert_routed_to_first_maximum(
        config, x, y, lambda up: np.asarray(max_pool_gradient(
            tf.constant(up), offsets, x.shape[1:3], layer.pool_size, layer.strides,
            layer.padding)))
    # TensorFlow's MaxPoolGrad makes the same choice, so the two agree at ties too
    upstream = np.random.default_rng(3).uniform(0.5, 1.5, y.shape).astype("float32")
    _, expected = _forward_and_gradient(_pool(config, "framework"), x, upstream)
    _, grad = _forward_and_gradient(layer, x, upstream)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


def test_the_tie_check_rejects_a_gradient_on_every_maximal_element():
    """The check above can fail: the "dual" gradient (every element equal to its window's
    maximum gets that window's upstream) is right for unique maxima, wrong at ties."""
    config = (3, 1, "same")
    x = _tied_input((1, 5, 5, 1))
    y = np.asarray(keras.layers.MaxPooling2D(*config)(x))
    windows = _windows(config, (5, 5))

    def every_maximum(upstream):
        grad = np.zeros_like(x)
        for (i, j), window in windows.items():
            for p, q in window:
                if x[0, p, q, 0] == y[0, i, j, 0]:
                    grad[0, p, q, 0] += upstream[0, i, j, 0]
        return grad

    with pytest.raises(AssertionError):
        assert_routed_to_first_maximum(config, x, y, every_maximum)


def test_auto_uses_the_mask_gradient_exactly_under_xla(monkeypatch):
    calls = []
    real = pf_layers.max_pool_gradient
    monkeypatch.setattr(pf_layers, "max_pool_gradient",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    auto = FastMaxPooling2D(3, strides=2)
    _, plain = _forward_and_gradient(auto, x)
    assert not calls  # TensorFlow without XLA: its own (oneDNN-fused) MaxPoolGrad
    _, xla = _forward_and_gradient(auto, x, jit=True)
    assert calls
    _, expected = _forward_and_gradient(keras.layers.MaxPooling2D(3, strides=2), x)
    np.testing.assert_allclose(xla, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(plain, expected)


def test_unknown_spatial_size_and_bad_choice():
    inputs = keras.Input((None, None, 2))
    layer = _pool((3, 1, "same"), "mask")
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(5).normal(size=(1, 6, 5, 2)).astype("float32")
    _, grad = _forward_and_gradient(model, x)  # traced with unknown H, W: framework's
    _, expected = _forward_and_gradient(keras.layers.MaxPooling2D(3, 1, "same"), x)
    np.testing.assert_array_equal(grad, expected)
    layer.gradient = "fast"
    with pytest.raises(ValueError, match="gradient must be 'auto', 'mask' or 'framework'"):
        layer(x)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision(dtype):
    rng = np.random.default_rng(6)
    x32 = rng.normal(size=(2, 9, 9, 3)).astype("float32")
    x = tf.cast(x32, dtype)  # rounding makes ties
    x32 = tf.cast(x, "float32").numpy()
    for config in [(3, 1, "same"), (3, 2, "valid")]:
        layer = _pool(config, "mask", dtype)  # as under a mixed precision policy
        upstream = tf.cast(rng.uniform(0.5, 1.5, layer.compute_output_shape(x.shape)), dtype)
        y, grad = _forward_and_gradient(layer, x, upstream, jit=True)
        assert y.dtype == grad.dtype == np.dtype(tf.as_dtype(dtype).as_numpy_dtype)
        np.testing.assert_array_equal(y.astype("float32"),
                                      keras.layers.MaxPooling2D(*config)(x32).numpy())
        # routing only: the float32 framework gradient of the same values and upstream,
        # up to the sum of overlapping windows' upstreams in the low precision
        _, expected = _forward_and_gradient(_pool(config, "framework"), x32,
                                            tf.cast(upstream, "float32"))
        np.testing.assert_allclose(grad.astype("float32"), expected, rtol=1e-2)


def _tiny_fit(gradient, monkeypatch, steps=8, jit_compile=False):
    import keras_pf

    monkeypatch.setattr(FastMaxPooling2D, "gradient", gradient)
    keras.utils.set_random_seed(0)
    model = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                              input_shape=(32, 32, 3), classes=4, classifier_activation=None)
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    model.compile(optimizer=keras.optimizers.SGD(0.02), jit_compile=jit_compile,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def test_fine_tune_reaches_the_framework_pools_loss(monkeypatch):
    """Eight SGD steps of a tiny R50-max (loss 1.76 -> 0.006): the loss curves with the
    mask gradient and with TensorFlow's agree within 2e-3 at every step (they differ
    by ~2e-5, as much as TensorFlow's own gradient does when each of its elements is
    moved by one float32 ulp at random: only the order in which overlapping windows'
    gradients are summed)."""
    mask = _tiny_fit("mask", monkeypatch)
    framework = _tiny_fit("framework", monkeypatch)
    assert framework[-1] < 0.1 * framework[0]  # it learns
    np.testing.assert_allclose(mask, framework, rtol=0, atol=2e-3)


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


# Under mixed_float16 a float16 rounding is amplified by the fit: TensorFlow's own
# gradient with each element moved by one float16 ulp at random (x (1 + 2^-10)) moves
# this curve by up to 0.06 (measured). The mask gradient moved it by 0.006 without XLA
# and 0.015 under XLA; the tolerances below are a third of that yardstick and less.
# (The first steps are skipped by Keras' loss scaling, which starts at 2^15.)


def test_mixed_precision_fit(monkeypatch, mixed_float16):
    """`mixed_float16` (float16 pools, Keras' loss scaling): the mask gradient's loss
    curve is TensorFlow's within 2e-2."""
    mask = _tiny_fit("mask", monkeypatch, steps=6)
    framework = _tiny_fit("framework", monkeypatch, steps=6)
    assert np.all(np.isfinite(mask)) and mask[-1] < 0.1 * mask[0]
    np.testing.assert_allclose(mask, framework, rtol=0, atol=2e-2)


@pytest.mark.slow  # two XLA compilations in float16: 40-60 s on 2 cores
def test_mixed_precision_fit_under_xla(monkeypatch, mixed_float16):
    """The same compiled with XLA, where "auto" takes the mask gradient: XLA's own
    select-and-scatter gradient's curve within 3e-2."""
    auto = _tiny_fit("auto", monkeypatch, steps=6, jit_compile=True)
    framework = _tiny_fit("framework", monkeypatch, steps=6, jit_compile=True)
    assert np.all(np.isfinite(auto)) and auto[-1] < 0.1 * auto[0]
    np.testing.assert_allclose(auto, framework, rtol=0, atol=3e-2)


@pytest.mark.slow  # a fresh process (logical CPUs) and three fits: 30-60 s on 2 cores
def test_mirrored_strategy_fit():
    """MirroredStrategy over two logical CPUs (8 images a replica): the mask gradient's
    loss curve is TensorFlow's within 2e-2.

    Tolerance: two runs with TensorFlow's gradient give bit-identical curves, so the
    difference is not nondeterminism of the cross-replica reduction; it is rounding
    (overlapping windows summed in another order), amplified by the fit. TensorFlow's
    own gradient with each element moved by one float32 ulp at random moves the curve by
    7.5e-4, 1.5e-3 and 8.0e-3 (three seeds); the mask gradient by 9e-4 in its first form
    and 8.0e-3 in its offsets form (forward identical, gradients within 5e-7 relative on
    one device). 2e-2 is 2.5x the widest of those."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = os.path.join(root, "tests", "helpers", "max_pool_mirrored_child.py")
    completed = subprocess.run([sys.executable, child], capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    curves = json.loads(completed.stdout.strip().splitlines()[-1])
    assert curves["replicas"] == 2
    assert curves["framework_again"] == curves["framework"]  # deterministic
    framework = np.asarray(curves["framework"])
    assert framework[-1] < 0.1 * framework[0]  # it learns
    np.testing.assert_allclose(curves["mask"], framework, rtol=0, atol=2e-2)


def test_saved_model_keeps_the_layer(tmp_path):
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, FastMaxPooling2D(3, strides=2, name="pool")(inputs))
    path = tmp_path / "pool.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("pool")) is FastMaxPooling2D
    x = np.random.default_rng(8).normal(size=(1, 8, 8, 2)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))


def test_files_saved_before_the_move_still_load(tmp_path):
    """Files written before the restructure name the layer's module `keras_pf.layers`,
    which is gone: Keras finds the layer by its registered name, `keras_pf>FastMaxPooling2D`."""
    import json
    import zipfile

    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, FastMaxPooling2D(3, strides=1, padding="same", name="pool")(inputs))
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new, \
            zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in new.namelist():
            data = new.read(item)
            if item == "config.json":
                config = json.loads(data)
                (pool,) = [layer for layer in config["config"]["layers"] if layer["name"] == "pool"]
                assert pool["registered_name"] == "keras_pf>FastMaxPooling2D"
                pool["module"] = "keras_pf.layers"
                data = json.dumps(config)
            old.writestr(item, data)
    loaded = keras.models.load_model(tmp_path / "old.keras")
    assert type(loaded.get_layer("pool")) is FastMaxPooling2D
