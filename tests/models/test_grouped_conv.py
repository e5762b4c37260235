"""FastGroupedConv2D (keras_pf/models/layers.py), PiT's pooling convolution: keras'
grouped Conv2D whose train step takes a depthwise form (TensorFlow without XLA) or a
form of strided slices (under XLA). Each must give keras' values and gradients, be taken
exactly in the train step, and train a tiny PiT as keras' own layer does."""

import numpy as np
import pytest

import keras
import tensorflow as tf

import keras_pf
from keras_pf.models.layers import FastGroupedConv2D

# (input shape, filters, kernel, strides, bias): PiT's own (3x3/2, two filters per
# channel, odd and even sides) and others the forms must get right too
CASES = [((2, 9, 9, 4), 8, 3, 2, True), ((2, 10, 10, 4), 8, 3, 2, True),
         ((2, 7, 8, 3), 3, (2, 3), (1, 2), False), ((1, 6, 5, 2), 6, 1, 1, True)]


def _pair(case, dtype=None):
    shape, filters, kernel, strides, bias = case
    theirs = keras.layers.Conv2D(filters, kernel, strides=strides, groups=shape[-1],
                                 use_bias=bias, dtype=dtype)
    mine = FastGroupedConv2D(filters, kernel, strides=strides, groups=shape[-1],
                             use_bias=bias, dtype=dtype)
    theirs.build(shape)
    mine.build(shape)
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    mine.set_weights(weights)
    return mine, theirs


def _value_and_gradients(layer, x, upstream, jit):
    @tf.function(jit_compile=jit)
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        return y, tape.gradient(loss, [x, *layer.trainable_weights])

    y, grads = run(x)
    return np.asarray(y, "float32"), [np.asarray(g, "float32") for g in grads]


def _forms_taken(monkeypatch):
    taken = []
    real = FastGroupedConv2D._form
    monkeypatch.setattr(FastGroupedConv2D, "_form",
                        lambda self, *a: taken.append(real(self, *a)) or taken[-1])
    return taken


@pytest.mark.parametrize("jit", [False, True], ids=["depthwise", "slices_under_xla"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_train_forms_equal_keras_in_values_and_gradients(case, jit, monkeypatch):
    taken = _forms_taken(monkeypatch)
    mine, theirs = _pair(case)
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=case[0]).astype("float32"))
    upstream = tf.constant(rng.uniform(0.5, 1.5, theirs.compute_output_shape(case[0]))
                           .astype("float32"))
    y, grads = _value_and_gradients(mine, x, upstream, jit)
    expected_y, expected = _value_and_gradients(theirs, x, upstream, jit)
    assert taken == ["slices" if jit else "depthwise"]
    # the same sums, within float32 rounding (their order is the kernels' own)
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(expected) == (3 if case[4] else 2)
    for got, want in zip(grads, expected):  # dL/dx, dL/dkernel, dL/dbias
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_the_form_is_keras_own_outside_the_train_step(monkeypatch):
    """predict, plain calls and exports (training=False) keep Keras' convolution (one
    CONV_2D in TFLite); so do layouts the forms do not cover."""
    taken = _forms_taken(monkeypatch)
    mine, _ = _pair(CASES[0])
    x = np.zeros(CASES[0][0], "float32")
    mine(x)
    mine(x, training=False)
    tf.function(lambda v: mine(v, training=False), jit_compile=True)(x)
    assert taken == ["framework"] * 3
    for layer, shape in [
            (FastGroupedConv2D(8, 3, padding="same", groups=4), (1, 9, 9, 4)),
            (FastGroupedConv2D(8, 3, dilation_rate=2, groups=4), (1, 9, 9, 4)),
            (FastGroupedConv2D(8, 3, groups=2), (1, 9, 9, 4)),  # two channels per group
            (FastGroupedConv2D(8, 3), (1, 9, 9, 4))]:
        layer(np.ones(shape, "float32"), training=True)
    assert taken[3:] == ["framework"] * 4
    # an unknown spatial size (as a Keras functional graph of any size would trace)
    inputs = keras.Input((None, None, 4))
    keras.Model(inputs, FastGroupedConv2D(8, 3, groups=4)(inputs, training=True))
    assert taken[-1] == "framework"


def test_float16():
    """mixed_float16's float16 compute: the forms within float16 rounding of keras'."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=CASES[0][0]).astype("float16"))
    mine, theirs = _pair(CASES[0], dtype="mixed_float16")
    upstream = tf.ones(theirs.compute_output_shape(CASES[0][0]))
    for jit in (False, True):
        y, grads = _value_and_gradients(mine, x, upstream, jit)
        expected_y, expected = _value_and_gradients(theirs, x, upstream, jit)
        np.testing.assert_allclose(y, expected_y, rtol=1e-2, atol=1e-2)
        for got, want in zip(grads, expected):
            np.testing.assert_allclose(got, want, rtol=1e-2, atol=5e-2)


def _tiny_pit_fit(form, monkeypatch, jit_compile=False, steps=8):
    if form == "framework":
        monkeypatch.setattr(FastGroupedConv2D, "_form", lambda self, *a: "framework")
    keras.utils.set_random_seed(0)
    model = keras_pf.PFPiT(base_dims=(8, 8), depths=(1, 1), heads=(1, 2), patch_size=8,
                           stride=4, weights=None, input_shape=(32, 32, 3), classes=4,
                           classifier_activation=None)
    assert sum(isinstance(l, FastGroupedConv2D) for l in model.layers) == 1
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 16)
    # the class is the bright quadrant, so that a few steps learn it
    x = rng.uniform(0, 0.2, (16, 32, 32, 3)).astype("float32")
    for image, label in zip(x, y):
        image[16 * (label // 2):16 * (label // 2) + 16, 16 * (label % 2):16 * (label % 2) + 16] += 1
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    monkeypatch.undo()
    return losses


@pytest.mark.parametrize("jit_compile", [False, True], ids=["depthwise", "slices_under_xla"])
def test_fine_tune_reaches_keras_own_loss(monkeypatch, jit_compile):
    """Eight SGD steps of a tiny PiT: the loss curves with the train forms and with
    keras' grouped convolution agree within 1e-4 at every step."""
    fast = _tiny_pit_fit("auto", monkeypatch, jit_compile)
    framework = _tiny_pit_fit("framework", monkeypatch, jit_compile)
    assert framework[-1] < 0.7 * framework[0]  # it learns (2.19 -> 1.25)
    np.testing.assert_allclose(fast, framework, rtol=0, atol=1e-4)


def test_config_and_saved_file(tmp_path):
    """Same config as keras' Conv2D; a saved .keras file reloads the layer."""
    mine, theirs = _pair(CASES[0])
    assert ({**mine.get_config(), "name": ""} == {**theirs.get_config(), "name": ""})
    inputs = keras.Input(CASES[0][0][1:])
    model = keras.Model(inputs, mine(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[-1]) is FastGroupedConv2D
    x = np.random.default_rng(4).normal(size=CASES[0][0]).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
