"""Grad-CAM: heat maps that depend on the image and the class, and the PNG command."""

import keras
import numpy as np
import pytest
from PIL import Image

import keras_pf
from keras_pf.models.gradcam import gradcam


def _small_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_pf.PFResNet(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                             input_shape=(128, 128, 3), classes=5)


def _reference_gradcam(model, image, class_index, backbone=None, dense="predictions"):
    """Grad-CAM written out with the analytic gradient of the head (global average
    pool + Dense), as an independent check of the GradientTape version."""
    backbone = backbone or model
    features_model = keras.Model(backbone.inputs, backbone.get_layer("conv5_block1_out").output)
    features = features_model.predict(image[None], verbose=0)
    dense = model.get_layer(dense)
    kernel, bias = (np.array(w, np.float64) for w in dense.get_weights())
    # Head = global average pool + Dense: the logit is linear in the feature map, so
    # its gradient is the Dense column spread evenly over the h*w locations.
    h, w = features.shape[1:3]
    gradient = np.broadcast_to(kernel[:, class_index] / (h * w), features.shape)
    weights = gradient.mean(axis=(1, 2), keepdims=True)
    heatmap = np.maximum((weights * features).sum(-1)[0], 0)
    return heatmap / heatmap.max()


def test_gradcam_matches_the_definition():
    model = _small_classifier()
    image = np.random.default_rng(0).normal(0, 1, (128, 128, 3)).astype("float32")
    # The top class: its logit (zero bias at init) is the sum of the map, so positive.
    heatmap, class_index = gradcam(model, image)
    assert heatmap.shape == (4, 4)
    np.testing.assert_allclose(heatmap, _reference_gradcam(model, image, class_index), atol=1e-4)
    # Another class's map is another map.
    other, _ = gradcam(model, image, class_index=(class_index + 1) % 5)
    assert not np.allclose(heatmap, other)
    assert heatmap.max() == pytest.approx(1.0) and heatmap.min() >= 0
    assert heatmap.std() > 0.01  # not constant


def test_gradcam_of_a_finetuned_model_with_nested_backbone():
    from keras_pf.training.finetune import build_model

    keras.utils.set_random_seed(0)
    model, backbone = build_model("PFResNet", 5, 128, weights=None, dropout=0.2, model_args=dict(
        block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25))
    image = np.random.default_rng(2).normal(0, 1, (128, 128, 3)).astype("float32")
    heatmap, class_index = gradcam(model, image)
    assert class_index == int(np.argmax(model.predict(image[None], verbose=0)))
    reference = _reference_gradcam(model, image, class_index, backbone=backbone, dense="logits")
    np.testing.assert_allclose(heatmap, reference, atol=1e-4)
    assert heatmap.std() > 0.01


def test_gradcam_default_class_is_top_prediction():
    model = _small_classifier()
    image = np.random.default_rng(1).normal(0, 1, (128, 128, 3)).astype("float32")
    _, class_index = gradcam(model, image)
    assert class_index == int(np.argmax(model.predict(image[None], verbose=0)))


def test_gradcam_rejects_batches():
    model = _small_classifier()
    with pytest.raises(ValueError, match="one RGB image"):
        gradcam(model, np.zeros((2, 128, 128, 3), "float32"))


def test_gradcam_command_writes_png(tmp_path):
    from keras_pf_cli import main

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (180, 240, 3), dtype=np.uint8)
    pixels[40:140, 60:160] = (250, 30, 30)  # structure for the network to respond to
    image_path = tmp_path / "input.jpg"
    Image.fromarray(pixels).save(image_path)
    model = _small_classifier()
    model_path = str(tmp_path / "small.keras")
    model.save(model_path)
    out = tmp_path / "cam.png"
    assert main(["gradcam", model_path, str(image_path), "-o", str(out)]) == 0
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (128, 128)
        overlaid = np.asarray(png.convert("RGB"), np.float32)
    # The blend differs from the plain crop by a heat map that is not constant.
    from keras_pf.training.data import eval_transform

    crop = eval_transform(pixels, 128).numpy()
    heat_contribution = overlaid - 0.55 * crop
    assert heat_contribution.std(axis=(0, 1)).max() > 5.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_gradcam_command_errors(tmp_path, capsys):
    from keras_pf_cli import main

    assert main(["gradcam", "NoSuchNet", "x.jpg", "-o", str(tmp_path / "o.png")]) == 2
    assert "Unknown model" in capsys.readouterr().err


@pytest.mark.parametrize("builder, kwargs, grid", [
    (keras_pf.PFViT, dict(embed_dim=48, depth=4, num_heads=3), (4, 4)),
    (keras_pf.PFPiT, dict(base_dims=(16, 16, 16), depths=(2, 2, 2), heads=(1, 2, 4)), (2, 2)),
])
def test_gradcam_transformers(builder, kwargs, grid):
    keras.utils.set_random_seed(0)
    model = builder(weights=None, input_shape=(64, 64, 3), classes=4, **kwargs)
    image = np.random.default_rng(0).normal(0, 1, (64, 64, 3)).astype("float32")
    heatmaps = [gradcam(model, image, class_index=c)[0] for c in range(4)]
    assert all(h.shape == grid and np.isfinite(h).all() for h in heatmaps)
    assert max(h.std() for h in heatmaps) > 0.01


def test_gradcam_of_a_finetuned_model_names_its_class(tmp_path, capsys):
    import json

    from keras_pf_cli import main

    pixels = np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    model = _small_classifier()
    model.save(tmp_path / "model.keras")
    names = ["apple", "banana", "cherry", "date", "elder"]
    (tmp_path / "class_names.json").write_text(json.dumps(names))
    assert main(["gradcam", str(tmp_path / "model.keras"), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "cam.png")]) == 0
    printed = capsys.readouterr().out
    assert any(f"({name})" in printed for name in names), printed
