"""Backbone use: feature pyramids of every named model, pooling, and BatchNorm freezing."""

import keras
import numpy as np
import pytest

import keras_pf

SIZE = 64  # multiple of 32: every ResNet stage divides it exactly

# Stage widths from the paper's / timm's configurations (ResNet-50 bottleneck outputs,
# DeiT embed dims, PiT base_dim * heads), written down independently of the builders.
EXPECTED = {
    "PFResNet50": ([4, 8, 16, 32], [256, 512, 1024, 2048]),
    "PFResNet50Hybrid": ([4, 8, 16, 32], [256, 512, 1024, 2048]),
    "PFResNet50Max": ([4, 8, 16, 32], [256, 512, 1024, 2048]),
    "PFResNet50Plain": ([4, 8, 16, 32], [256, 512, 1024, 2048]),
    "PFViTTiny": ([16] * 4, [192] * 4),
    "PFViTSmall": ([16] * 4, [384] * 4),
    "PFViTBase": ([16] * 4, [768] * 4),
    "PFPiTTiny": ([8, 16, 32], [64, 128, 256]),
    "PFPiTSmall": ([8, 16, 32], [144, 288, 576]),
    "PFPiTBase": ([7, 14, 28], [256, 512, 1024]),
}
PIT_PATCH = {"PFPiTTiny": 16, "PFPiTSmall": 16, "PFPiTBase": 14}


def test_every_named_model_is_covered():
    assert set(EXPECTED) == set(keras_pf.MODELS)


@pytest.mark.parametrize("model_name", sorted(EXPECTED))
def test_feature_pyramid_strides_and_channels(model_name):
    strides, channels = EXPECTED[model_name]
    model = keras_pf.MODELS[model_name](include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    pyramid = keras_pf.feature_pyramid(model)
    names = [name for name, _ in keras_pf.feature_layers(model)]
    assert [stride for _, stride in keras_pf.feature_layers(model)] == strides
    assert [o.shape[-1] for o in pyramid.outputs] == channels
    sizes = [o.shape[1] for o in pyramid.outputs]
    if model_name.startswith("PFPiT"):
        # Unpadded patch conv (kernel p, step s), then stride-2 pools with padding 1.
        patch, step = PIT_PATCH[model_name], strides[0]
        expected = [(SIZE - patch) // step + 1]
        for _ in strides[1:]:
            expected.append((expected[-1] - 1) // 2 + 1)
        assert sizes == expected
        assert all(name.startswith(f"stage{s}_block") for s, name in enumerate(names))
    else:
        assert sizes == [SIZE // stride for stride in strides]
    # The outputs are the named layers' outputs, computed on real data.
    x = np.random.default_rng(0).uniform(-2, 2, (1, SIZE, SIZE, 3)).astype("float32")
    features = pyramid.predict(x, verbose=0)
    assert len(features) == len(strides)
    probe = keras.Model(model.inputs, model.get_layer(names[-1]).output)
    np.testing.assert_allclose(features[-1], probe.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_resnet_names_follow_depths_of_generic_builds():
    model = keras_pf.PFResNet(block="max", depths=(2, 1, 3, 1), width_mult=0.25, include_top=False,
                              weights=None, input_shape=(96, 64, 3))
    layers = keras_pf.feature_layers(model)
    assert [name for name, _ in layers] == [
        "conv2_block2_out", "conv3_block1_out", "conv4_block3_out", "conv5_block1_out"]
    shapes = [tuple(o.shape[1:3]) for o in keras_pf.feature_pyramid(model).outputs]
    assert shapes == [(24, 16), (12, 8), (6, 4), (3, 2)]


@pytest.mark.parametrize("pooling, rank", [(None, 4), ("avg", 2), ("max", 2)])
def test_backbone_pooling(pooling, rank):
    model = keras_pf.PFResNet(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25, include_top=False,
                              pooling=pooling, weights=None, input_shape=(64, 64, 3))
    assert len(model.output.shape) == rank


def test_feature_pyramid_rejects_foreign_models():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="not a keras_pf"):
        keras_pf.feature_pyramid(model)


def _classifier(backbone, training=False):
    """The backbone under a 3-class head, called with `training` (None: `fit` runs it
    in training mode)."""
    inputs = keras.Input((32, 32, 3))
    x = backbone(inputs, training=training)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _snapshot(backbone):
    bn = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    conv = backbone.get_layer("conv1_conv")
    return ([np.array(v) for l in bn for v in (l.moving_mean, l.moving_variance)],
            np.array(conv.kernel))


def _fit(model):
    rng = np.random.default_rng(0)
    # Off-centre inputs so that BatchNorm in training mode would move its statistics.
    x = rng.normal(3.0, 2.0, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def _backbone():
    return keras_pf.PFResNet(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25, include_top=False,
                             weights=None, input_shape=(32, 32, 3))


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics():
    backbone = keras_pf.freeze_backbone(_backbone())
    stats, kernel = _snapshot(backbone)
    model = _classifier(backbone)
    head_before = np.array(model.get_layer("head").kernel)
    _fit(model)
    stats_after, kernel_after = _snapshot(backbone)
    assert not np.allclose(head_before, np.array(model.get_layer("head").kernel))
    np.testing.assert_array_equal(kernel, kernel_after)
    for before, after in zip(stats, stats_after):
        np.testing.assert_array_equal(before, after)


def test_unfrozen_backbone_trains_weights_but_not_batchnorm_statistics():
    backbone = keras_pf.set_backbone_trainable(_backbone(), True)
    stats, kernel = _snapshot(backbone)
    # Even called in training mode, a frozen BatchNorm runs in inference mode in Keras 3.
    _fit(_classifier(backbone, training=None))
    stats_after, kernel_after = _snapshot(backbone)
    assert not np.allclose(kernel, kernel_after)
    for before, after in zip(stats, stats_after):
        np.testing.assert_array_equal(before, after)


def test_batchnorm_statistics_move_when_not_frozen():
    """The control for the two tests above: the same fit does move the statistics."""
    backbone = keras_pf.set_backbone_trainable(_backbone(), True, freeze_batchnorm=False)
    stats, _ = _snapshot(backbone)
    _fit(_classifier(backbone, training=None))
    stats_after, _ = _snapshot(backbone)
    assert any(not np.allclose(b, a) for b, a in zip(stats, stats_after))
