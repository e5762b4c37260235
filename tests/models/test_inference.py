"""`keras_pf.fold_batchnorm`: the folded copy computes what the original computes, for
our networks and keras.applications ones, and folds only what it may."""

import numpy as np
import pytest

import keras
import keras_pf


def _random_statistics(model, seed=0):
    """BatchNorm statistics and affine parameters far from the identity, so that a
    wrong fold shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = []
            for w in layer.weights:  # gamma, beta (if any), moving mean, moving variance
                n = w.shape[0]
                positive = "variance" in w.path or "gamma" in w.path
                weights.append(rng.uniform(0.5, 2.0, n) if positive else rng.normal(0, 0.5, n))
            layer.set_weights(weights)
    return model


def _batchnorms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _assert_same_function(model, folded, seed=1):
    x = np.random.default_rng(seed).uniform(0, 1, (2, *model.input_shape[1:])).astype("float32")
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("block", ["plain", "max", "hybrid"])
def test_pf_resnets_fold_every_batchnorm(block):
    model = _random_statistics(keras_pf.PFResNet(
        block=block, depths=(1, 1, 1, 1), width_mult=0.25, input_shape=(64, 64, 3),
        classes=10, classifier_activation=None, weights=None))
    folded = keras_pf.fold_batchnorm(model)
    assert _batchnorms(model) and not _batchnorms(folded)
    assert folded.get_layer("conv1_conv").use_bias and not model.get_layer("conv1_conv").use_bias
    _assert_same_function(model, folded)


def test_keras_applications_with_biased_and_depthwise_convs():
    # ResNet50's convolutions have biases; MobileNetV2 has depthwise convolutions
    for model in (keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3),
                                              classes=10, classifier_activation=None),
                  keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3),
                                                 classes=10, classifier_activation=None)):
        model = _random_statistics(model)
        folded = keras_pf.fold_batchnorm(model)
        assert not _batchnorms(folded), model.name
        _assert_same_function(model, folded)


def test_only_foldable_batchnorms_are_folded():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="relu_conv", activation="relu")(inputs)
    a = keras.layers.BatchNormalization(name="after_activation")(a)  # conv's ReLU between
    shared = keras.layers.Conv2D(4, 1, name="two_consumers")(a)
    b = keras.layers.BatchNormalization(name="beside_an_add")(shared)
    b = keras.layers.Add()([b, shared])  # the conv output is used twice
    c = keras.layers.Dense(5, name="dense")(keras.layers.GlobalAveragePooling2D()(b))
    c = keras.layers.BatchNormalization(name="after_dense", center=False)(c)
    model = _random_statistics(keras.Model(inputs, c))
    folded = keras_pf.fold_batchnorm(model)
    assert [layer.name for layer in _batchnorms(folded)] == ["after_activation", "beside_an_add"]
    _assert_same_function(model, folded)


def test_nested_backbones_fold_and_nested_sequentials_keep_their_weights():
    # A keras-pf finetune model: the backbone is a functional model inside the model
    from keras_pf.training.finetune import build_model

    model, backbone = build_model("PFResNet", 3, 32, weights=None, model_args={
        "block": "hybrid", "depths": (1, 1, 1, 1), "width_mult": 0.25})
    _random_statistics(backbone)
    folded = keras_pf.fold_batchnorm(model)
    nested = [layer for layer in folded.layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1 and _batchnorms(backbone) and not _batchnorms(nested[0])
    _assert_same_function(model, folded)

    inputs = keras.Input((8, 8, 3))
    block = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.BatchNormalization()])
    x = keras.layers.Conv2D(5, 1)(block(inputs))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    _random_statistics(model)
    _random_statistics(block)
    folded = keras_pf.fold_batchnorm(model)
    assert len(_batchnorms(folded)) == 0 and len(_batchnorms(folded.layers[1])) == 1
    _assert_same_function(model, folded)


def test_the_original_is_untouched_and_the_copy_saves(tmp_path):
    model = _random_statistics(keras_pf.PFResNet(
        block="max", depths=(1, 1, 1, 1), width_mult=0.25, input_shape=(32, 32, 3),
        classes=10, weights=None))
    before = [np.array(w) for w in model.weights]
    folded = keras_pf.fold_batchnorm(model)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.asarray(new))
    path = tmp_path / "folded.keras"
    folded.save(path)
    _assert_same_function(model, keras.saving.load_model(path))


def test_sequential_and_subclassed_models_are_refused():
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="functional Keras model"):
        keras_pf.fold_batchnorm(sequential)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="functional Keras model"):
        keras_pf.fold_batchnorm(Subclassed())
