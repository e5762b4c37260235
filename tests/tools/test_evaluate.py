"""tools/evaluate_imagenet.py end to end on a generated image folder.

The images are uniform colours, so resizing and cropping leave them unchanged and the
expected top-1/top-5 can be computed independently: the model applied directly to a
constant, `preprocess_input`-normalized array."""

import copy

import numpy as np
import pytest
from PIL import Image

from conftest import ParityCase, load_tool

CASE = "resnet_hybrid_64"
WEIGHTS_ID = "test_eval_resnet"


@pytest.fixture
def registry_copy(monkeypatch, tmp_path):
    from keras_pf.weights import registry

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(registry, "WEIGHTS", copy.deepcopy(registry.WEIGHTS))
    registry.register_weights(
        WEIGHTS_ID, "tiny", "http://127.0.0.1:9/unused.pth", model=ParityCase(CASE).build,
        preprocessing={"image_size": 64, "crop_ratio": 0.875, "interpolation": "bilinear"},
        reported={"top1": 50.0, "top5": 90.0}, imagenet=True)
    return registry


def test_evaluate_image_folder_end_to_end(registry_copy, tmp_path, capsys):
    import keras_pf

    case = ParityCase(CASE)
    model = case.build(weights=str(case.checkpoint))
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, size=(14, 3))
    inputs = keras_pf.preprocess_input(
        np.broadcast_to(colors[:, None, None, :], (14, 64, 64, 3)).astype(np.float32))
    logits = np.asarray(model(inputs))
    # Half the images go to the class the model predicts, half to a random class.
    labels = np.where(np.arange(14) % 2 == 0, logits.argmax(1), rng.integers(0, 10, 14))
    folder = tmp_path / "images"
    for i, (color, label) in enumerate(zip(colors, labels)):
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
        size = (90, 70) if i % 3 else (70, 100)
        Image.new("RGB", size, tuple(int(c) for c in color)).save(folder / f"class_{label}" / f"{i}.png")
    for label in range(10):  # every class has a folder, so sorted position = class index
        (folder / f"class_{label}").mkdir(exist_ok=True)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    expected_top1 = 100 * np.mean(top5[:, 0] == labels)
    expected_top5 = 100 * np.mean(np.any(top5 == labels[:, None], axis=1))
    assert 0 < expected_top1 < 100

    measured = load_tool("evaluate_imagenet").main([WEIGHTS_ID, "--weights", str(case.checkpoint), "--data",
                                 str(folder), "--batch-size", "4", "--quiet"])
    assert measured["images"] == 14
    assert measured["top1"] == pytest.approx(expected_top1)
    assert measured["top5"] == pytest.approx(expected_top5)
    out = capsys.readouterr().out
    assert "reported" in out and "measured" in out
    assert f"{expected_top1:.2f}" in out


def test_wordnet_folders_map_through_the_class_index():
    tool = load_tool("evaluate_imagenet")
    assert tool.label_mapping(["n01443537", "n01440764"], 1000) == [1, 0]
    assert tool.label_mapping(["cat", "dog"], 10) == [0, 1]
    with pytest.raises(ValueError, match="classes"):
        tool.label_mapping([f"c{i}" for i in range(11)], 10)


def test_reported_figures_are_printed_beside_the_measured(registry_copy):
    tool = load_tool("evaluate_imagenet")
    reported = tool.reported_figures("pf_vit_small", "imagenet")
    table = tool.format_table("pf_vit_small", "imagenet", reported,
                              {"top1": 80.0, "top5": 95.0, "images": 50000})
    assert "unknown" in table and "80.0" in table and "74.2" in table
    table = tool.format_table("pf_resnet50_hybrid", "long",
                              tool.reported_figures("pf_resnet50_hybrid", "long"),
                              {"top1": 77.95, "top5": 93.5, "images": 50000})
    assert "78.00" in table and "77.95" in table and "-0.05" in table and "within 0.1" in table


def test_record_writes_measured_figures_and_the_matching_recipe(registry_copy, monkeypatch):
    tool = load_tool("evaluate_imagenet")
    written = []
    monkeypatch.setattr(registry_copy, "write_table", lambda: written.append(True))
    info = tool.record("pf_pit_small", "imagenet", {"top1": 78.14, "top5": 94.0, "images": 50000},
                       "tfds:imagenet2012:validation")
    assert written == [True]
    assert info["measured"]["top1"] == 78.14 and info["measured"]["images"] == 50000
    assert info["reported"]["recipe"] == "cutmix"  # 78.1 reported with CutMix
    info = tool.record("pf_vit_small", "paper", {"top1": 76.0, "top5": 93.0, "images": 10}, "x")
    assert info["reported"]["recipe"] == "unknown"  # matches no reported figure
