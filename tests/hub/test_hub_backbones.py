"""The keras-hub backbones hold the keras_pf network itself: same weights in the same
order, the same output, and a pyramid whose levels are the network's own maps (or,
where the family has no map at that stride, a documented parameter-free resampling of
one)."""

import math

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import keras_pf  # noqa: E402
import keras_pf.hub  # noqa: E402
from hub_helpers import SIZE, family, images, tiny_backbone, tiny_model  # noqa: E402,F401


def test_keras_pf_weights_transfer_and_give_the_same_output(family):
    model = tiny_model(family, include_top=False)
    backbone = tiny_backbone(family)
    assert [w.shape for w in backbone.weights] == [w.shape for w in model.weights]
    backbone.set_weights(model.get_weights())
    x = keras_pf.preprocess_input(images())
    np.testing.assert_array_equal(np.asarray(backbone(x)), np.asarray(model(x)))
    assert isinstance(backbone, keras_hub.models.FeaturePyramidBackbone)


def _interpolate(grid, positions):
    """`grid` (B, H, W, C) linearly interpolated at `positions` on both axes (clamped
    at the borders): numpy's, an independent reference."""
    index = np.arange(grid.shape[1])
    rows = np.apply_along_axis(lambda v: np.interp(positions, index, v), 1, grid)
    return np.apply_along_axis(lambda v: np.interp(positions, index, v), 2, rows)


def _pyramid(backbone, x):
    return {k: np.asarray(v) for k, v in
            keras.Model(backbone.input, backbone.pyramid_outputs)(x).items()}


def test_resnet_pyramid_is_the_stage_outputs():
    model = tiny_model("resnet", include_top=False)
    backbone = tiny_backbone("resnet")
    backbone.set_weights(model.get_weights())
    x = keras_pf.preprocess_input(images())
    pyramid = _pyramid(backbone, x)
    stages = [np.asarray(t) for t in keras_pf.feature_pyramid(model)(x)]  # keras_pf's own
    assert list(pyramid) == ["P2", "P3", "P4", "P5"]
    for level, stage in zip(("P2", "P3", "P4", "P5"), stages):
        np.testing.assert_array_equal(pyramid[level], stage)
        assert pyramid[level].shape[1] == SIZE // 2 ** int(level[1])
    np.testing.assert_array_equal(pyramid["P5"], np.asarray(model(x)))  # P5: the last stage


def test_vit_pyramid_is_the_last_grid_pooled_and_upsampled():
    model = tiny_model("vit", include_top=False)
    backbone = tiny_backbone("vit")
    backbone.set_weights(model.get_weights())
    x = keras_pf.preprocess_input(images())
    pyramid = _pyramid(backbone, x)
    grid = np.asarray(model(x))  # (2, 4, 4, C): stride 16
    assert {k: v.shape[1] for k, v in pyramid.items()} == {"P2": 16, "P3": 8, "P4": 4, "P5": 2}
    np.testing.assert_array_equal(pyramid["P4"], grid)
    b, h, w, c = grid.shape
    np.testing.assert_allclose(pyramid["P5"], grid.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4)))
    # bilinear, half-pixel centres: output cell j of an f-times upsampling samples input (j + 0.5) / f - 0.5
    for level, factor in (("P3", 2), ("P2", 4)):
        positions = (np.arange(h * factor) + 0.5) / factor - 0.5
        np.testing.assert_allclose(pyramid[level], _interpolate(grid, positions), atol=1e-5)


def test_pit_pyramid_is_the_stage_outputs_the_first_laid_on_the_stride_8_grid():
    model = tiny_model("pit", include_top=False)
    backbone = tiny_backbone("pit")
    backbone.set_weights(model.get_weights())
    x = keras_pf.preprocess_input(images())
    pyramid = _pyramid(backbone, x)
    first, second, _ = [np.asarray(t) for t in keras_pf.feature_pyramid(model)(x)]
    assert list(pyramid) == ["P3", "P4", "P5"]
    assert first.shape[1] == SIZE // 8 - 1  # the unpadded patch embedding: one token short
    assert {k: v.shape[1] for k, v in pyramid.items()} == {"P3": 8, "P4": 4, "P5": 2}
    np.testing.assert_array_equal(pyramid["P5"], np.asarray(model(x)))
    np.testing.assert_array_equal(pyramid["P4"], second)
    # P3 cell j is centred on pixel 8j + 4, i.e. token j - 0.5 (token i centred on 8i + 8)
    expected = _interpolate(first, np.arange(8) - 0.5)
    np.testing.assert_allclose(pyramid["P3"], expected, atol=1e-6)


def test_config_round_trip(family):
    backbone = tiny_backbone(family)
    config = backbone.get_config()
    again = type(backbone).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    assert type(restored) is type(backbone) and restored.get_config() == config
    assert [w.shape for w in restored.weights] == [w.shape for w in backbone.weights]


def test_a_keras_pf_weights_file_loads_into_the_backbone_strictly(family, tmp_path):
    model = tiny_model(family)  # with its classifier: the head is left out, as keras.applications does
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    backbone = tiny_backbone(family)
    backbone.load_weights(path)
    x = keras_pf.preprocess_input(images(1))
    headless = keras.Model(model.input, model.get_layer("predictions").input)
    pooled = np.asarray(backbone(x)).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, np.asarray(headless(x)), atol=1e-5)
    wider = {"resnet": dict(width_mult=0.5), "vit": dict(embed_dim=48, num_heads=2),
             "pit": dict(base_dims=(16, 16, 16))}[family]
    config = {**backbone.get_config(), **wider}
    with pytest.raises(ValueError, match="does not fit") as error:
        type(backbone).from_config(config).load_weights(path)
    assert path in str(error.value) and "\n" not in str(error.value)


def test_backbones_plug_into_retinanet_and_deeplab_unchanged(family):
    backbone = tiny_backbone(family)
    x = images(1)
    retina = keras_hub.models.RetinaNetObjectDetector(
        backbone=keras_hub.models.RetinaNetBackbone(image_encoder=backbone, min_level=3, max_level=7,
                                                    use_p5=False, image_shape=(SIZE, SIZE, 3)),
        num_classes=3, bounding_box_format="yxyx")
    # the heads' raw outputs (predict() adds keras-hub's own box decoding and NMS, ~5 s
    # of tracing per model; the round trip of the slow tier runs it): one anchor set per
    # cell of P3..P7
    heads = retina(x)
    anchors = retina.anchor_generator.num_base_anchors * sum(math.ceil(SIZE / 2 ** level) ** 2 for level in range(3, 8))
    assert tuple(heads["bbox_regression"].shape) == (1, anchors, 4)
    assert tuple(heads["cls_logits"].shape) == (1, anchors, 3)
    assert np.isfinite(np.asarray(heads["cls_logits"])).all()
    low = "P2" if "P2" in backbone.pyramid_outputs else "P3"
    deeplab = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=keras_hub.models.DeepLabV3Backbone(
            image_encoder=backbone, spatial_pyramid_pooling_key="P5", dilation_rates=[1, 2, 3],
            upsampling_size=2 ** (5 - int(low[1])), low_level_feature_key=low, image_shape=(SIZE, SIZE, 3)),
        num_classes=3)
    assert tuple(deeplab(x).shape) == (1, SIZE, SIZE, 3)


def test_dtype_builds_under_that_policy():
    backbone = tiny_backbone("resnet", dtype="bfloat16")
    assert backbone.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
