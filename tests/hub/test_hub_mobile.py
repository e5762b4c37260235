"""A keras-hub DeepLabV3 segmenter on a PF backbone to a phone: a builtins-only TFLite
file (the same checks as the classifiers' export) that MediaPipe Tasks' ImageSegmenter
loads and runs, giving Keras' category mask. MediaPipe runs in the interpreter named by
KERAS_PF_MEDIAPIPE_PYTHON (skipped without it, failed under CI=true), as in
tests/mobile/test_mobile.py."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras_pf  # noqa: E402
import keras_pf.hub  # noqa: E402
from hub_helpers import SIZE, tiny_backbone  # noqa: E402
from keras_pf.hub.mobile import export_segmenter  # noqa: E402
from keras_pf.mobile.check import run_tflite, tflite_ops, undelegated_ops  # noqa: E402
from keras_pf.mobile.metadata import read_metadata  # noqa: E402
from shapes import make_dataset  # noqa: E402
from test_mobile import mediapipe_python  # noqa: E402

CLIENT = pathlib.Path(__file__).parents[1] / "helpers" / "mediapipe_segment.py"
LABELS = ["background", "square", "disc", "triangle"]


def segmenter(family):
    backbone = tiny_backbone(family)
    low = "P2" if "P2" in backbone.pyramid_outputs else "P3"
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=keras_hub.models.DeepLabV3Backbone(
            image_encoder=backbone, spatial_pyramid_pooling_key="P5", dilation_rates=[1, 2],
            upsampling_size=2 ** (5 - int(low[1])), low_level_feature_key=low, image_shape=(SIZE, SIZE, 3)),
        num_classes=len(LABELS))


@pytest.fixture(scope="module")
def pixels():
    return make_dataset(4, seed=7)[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny ResNet segmenter's file, exported once for this module's tests."""
    model = segmenter("resnet")
    path = export_segmenter(model, tmp_path_factory.mktemp("resnet") / "seg.tflite", labels=LABELS)
    return model, path


def check_export(model, path, pixels):
    expected = model.predict(keras_pf.preprocess_input(pixels.astype("float32")), verbose=0)
    got = run_tflite(path, pixels.astype("float32"))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3 * np.abs(expected).max())
    ops = set(tflite_ops(path))
    assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops  # builtins only
    assert undelegated_ops(path) == {}  # XNNPACK, the phone CPU delegate, runs every op
    meta = read_metadata(path)
    assert meta["files"]["labels.txt"].decode().split() == LABELS
    output = meta["model"].subgraphMetadata[0].outputTensorMetadata[0]
    assert output.name in (b"segmentation_masks", "segmentation_masks")
    assert open(str(path).replace(".tflite", ".labels.txt")).read().split() == LABELS


def test_segmenter_exports_builtins_only_and_matches_keras(exported, pixels):
    check_export(*exported, pixels)


@pytest.mark.slow  # another ~10 s export; PiT's pyramid has the resampled P3
def test_pit_segmenter_exports_builtins_only_and_matches_keras(pixels, tmp_path):
    model = segmenter("pit")
    check_export(model, export_segmenter(model, tmp_path / "seg.tflite", labels=LABELS), pixels)


def test_segmenter_runs_in_mediapipe_image_segmenter(exported, pixels, tmp_path):
    python = mediapipe_python()
    model, path = exported
    images, masks = tmp_path / "images.npy", tmp_path / "masks.npy"
    np.save(images, pixels)
    run = subprocess.run([python, str(CLIENT), str(path), str(images), str(masks)],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, GLOG_minloglevel="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == LABELS
    keras_mask = model.predict(keras_pf.preprocess_input(pixels.astype("float32")), verbose=0).argmax(-1)
    mediapipe_mask = np.load(masks)
    assert mediapipe_mask.shape == keras_mask.shape
    agreement = (mediapipe_mask == keras_mask).mean()
    assert agreement > 0.99, agreement  # ties between near-equal logits may flip a few pixels
