"""A keras-hub DeepLabV3 segmenter on a PF backbone to a phone: a builtins-only TFLite
file (the same checks as the classifiers' export) that MediaPipe Tasks' ImageSegmenter
loads and runs, giving Keras' category mask. MediaPipe runs in the interpreter named by
KERAS_PF_MEDIAPIPE_PYTHON (skipped without it, failed under CI=true), as in
tests/mobile/test_mobile.py."""

import contextlib
import io
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
def exported_by_cli(tmp_path_factory):
    """A tiny ResNet segmenter saved as a user saves one after fit (`.keras`, with
    finetune's class_names.json beside it) and exported once, for this module's tests,
    by `keras-pf export --check` (which runs export_segmenter); returns the model, the
    file and what the command printed."""
    from keras_pf_cli import main

    model = segmenter("resnet")
    folder = tmp_path_factory.mktemp("resnet")
    model.save(folder / "seg.keras")
    (folder / "class_names.json").write_text(json.dumps(LABELS))
    path = folder / "seg.tflite"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(folder / "seg.keras"), "-o", str(path), "--check"])
    assert code == 0 and path.exists(), printed.getvalue()
    return model, path, printed.getvalue()


@pytest.fixture(scope="module")
def exported(exported_by_cli):
    return exported_by_cli[:2]


def test_cli_exports_a_saved_segmenter_and_checks_it(exported_by_cli):
    printed = exported_by_cli[2]
    assert "| seg.tflite |" in printed and "pixel agreement" in printed, printed
    row = next(line for line in printed.splitlines() if line.startswith("| seg.tflite |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "100.0%" and cells[6] == "none" and cells[7] == "none", row  # argmax, dynamic ops, XNNPACK


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


def test_cli_refuses_a_segmenter_without_in_graph_normalization(exported_by_cli, capsys):
    from keras_pf_cli import main

    saved = exported_by_cli[1].with_suffix(".keras")
    out = saved.with_name("bad.tflite")
    assert main(["export", str(saved), "--no-include-preprocessing", "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "segmenter" in error[0] and "--no-include-preprocessing" in error[0], error
    assert not out.exists()


@pytest.mark.slow  # three more exports (~10 s each on 2 cores)
@pytest.mark.parametrize("precision", ["float16", "dynamic", "int8"])
def test_cli_exports_a_saved_segmenter_at_every_precision(exported_by_cli, precision, tmp_path, capsys):
    from keras_pf.mobile.check import weight_dtypes
    from keras_pf_cli import main

    model, path, _ = exported_by_cli
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    from PIL import Image

    for i, image in enumerate(make_dataset(8, seed=3)[0]):
        Image.fromarray(image.astype("uint8")).save(calibration / f"{i}.png")
    out = tmp_path / f"seg_{precision}.tflite"
    code = main(["export", str(path.with_suffix(".keras")), "--precision", precision, "-o", str(out),
                 "--calibration", str(calibration), "--num-calibration", "4", "--check"])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0 and out.exists(), printed + captured.err
    kinds = {k for v in weight_dtypes(str(out)).values() for k in v}
    assert {"float16": "float16", "dynamic": "int8", "int8": "int8"}[precision] in kinds, kinds
    row = next(line for line in printed.splitlines() if line.startswith(f"| {out.name} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[4].rstrip("%")) > 90 and cells[6] == "none", row  # argmax agreement, builtins
    meta = read_metadata(str(out))
    assert meta["files"]["labels.txt"].decode().split() == LABELS


# ----------------------------------------------------------------------------- detector


@pytest.fixture(scope="module")
def detector():
    """A tiny RetinaNet on a tiny PF ResNet whose heads' last layers are scaled down
    (box deltas ~0.3, logits ~1), so that its predict() keeps boxes of many scores and
    sizes inside the image: random heads give exp(deltas) of 1e6 and saturated
    sigmoids, where NMS order is a matter of ties."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=keras_hub.models.RetinaNetBackbone(image_encoder=tiny_backbone("resnet"), min_level=3,
                                                    max_level=7, use_p5=False, image_shape=(SIZE, SIZE, 3)),
        num_classes=3, bounding_box_format="xyxy")
    model.prediction_decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format="xyxy", from_logits=True, confidence_threshold=0.45, iou_threshold=0.5,
        max_detections=20)
    for head, scale in ((model.box_head, 0.01), (model.classification_head, 0.05)):
        kernel, bias = head.weights[-2:]
        kernel.assign(kernel * scale)
        bias.assign(bias * 0)
    return model


def keras_detections(detector, pixels):
    predicted = detector.predict(keras_pf.preprocess_input(pixels.astype("float32")), verbose=0)
    assert (np.asarray(predicted["num_detections"]) > 3).all()  # something to compare
    return {k: np.asarray(v) for k, v in predicted.items()}


@pytest.mark.slow  # a RetinaNet export and predict()'s NMS tracing (~20 s)
def test_detector_heads_file_decoded_by_decode_detections_matches_keras_predict(detector, pixels, tmp_path):
    from keras_pf.hub.mobile import anchors_path, decode_detections, export_detector

    path = export_detector(detector, tmp_path / "det.tflite", labels=["a", "b", "c"], postprocess=False)
    ops = set(tflite_ops(path))
    assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops
    assert set(undelegated_ops(path)) <= {"TILE"}  # keras-hub FPN's nearest upsampling
    heads = run_tflite(path, pixels.astype("float32"))
    expected = keras_detections(detector, pixels)
    anchors = np.load(anchors_path(path))
    assert open(str(path).replace(".tflite", ".labels.txt")).read().split() == ["a", "b", "c"]
    for i, head in enumerate(heads):
        got = decode_detections(head, anchors, (SIZE, SIZE), "xyxy", iou_threshold=0.5,
                                confidence_threshold=0.45, max_detections=20)
        assert got["num_detections"] == expected["num_detections"][i]
        np.testing.assert_array_equal(got["labels"], expected["labels"][i])
        np.testing.assert_allclose(got["confidence"], expected["confidence"][i], atol=1e-4)
        np.testing.assert_allclose(got["boxes"], expected["boxes"][i], atol=1e-2)


@pytest.mark.slow  # a RetinaNet export with the NMS and predict()'s tracing (~20 s)
def test_detector_file_with_decoding_and_nms_matches_keras_predict(detector, pixels, tmp_path):
    from keras_pf.hub.mobile import export_detector, run_detector_file
    from keras_pf.mobile.check import dynamic_ops

    path = export_detector(detector, tmp_path / "det.tflite", postprocess=True)
    ops = set(tflite_ops(path))
    assert "NON_MAX_SUPPRESSION_V5" in ops and not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}
    assert dynamic_ops(path) == []
    got = run_detector_file(path, pixels)
    expected = keras_detections(detector, pixels)
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["confidence"], expected["confidence"], atol=1e-4)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-2)


@pytest.mark.slow  # two RetinaNet exports, checked against predict() (~30 s)
def test_cli_exports_a_saved_detector_with_and_without_nms(detector, tmp_path, capsys):
    from keras_pf.hub.mobile import anchors_path
    from keras_pf_cli import main

    detector.save(tmp_path / "det.keras")
    (tmp_path / "class_names.json").write_text(json.dumps(["a", "b", "c"]))
    for extra, name in (([], "det.tflite"), (["--raw-heads"], "heads.tflite")):
        out = tmp_path / name
        code = main(["export", str(tmp_path / "det.keras"), "-o", str(out), "--check", *extra])
        captured = capsys.readouterr()
        assert code == 0 and out.exists() and os.path.exists(anchors_path(out)), captured.out + captured.err
        row = next(line for line in captured.out.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[6] == "none", row  # no dynamic-shape ops
        if extra:  # the heads against Keras' heads
            assert float(cells[2]) < 1e-3 and cells[4] == "-", row
        else:  # keras-hub's predict() against the file: same detections on every image;
            # boxes close on average (on the random check images, two near-equal scores
            # may swap two boxes' order, which the max diff shows)
            assert cells[4] == "100.0%" and float(cells[3]) < 0.1, row
    assert main(["export", str(tmp_path / "det.keras"), "--no-include-preprocessing",
                 "-o", str(tmp_path / "x.tflite")]) == 2
    assert "detector" in capsys.readouterr().err


def test_a_segmenter_whose_preprocessor_normalizes_otherwise_is_refused(exported, tmp_path):
    from keras_pf.hub.image_converter import IMAGENET_OFFSET, IMAGENET_SCALE
    from keras_pf.hub.mobile import check_normalization

    model = exported[0]
    kept = model.preprocessor
    try:
        model.preprocessor = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(
            image_converter=keras_hub.layers.ImageConverter(scale=1 / 255.0))
        with pytest.raises(ValueError, match="not ImageNet's mean/std"):
            export_segmenter(model, tmp_path / "bad.tflite")
        assert not (tmp_path / "bad.tflite").exists()
        model.preprocessor = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(
            image_converter=keras_hub.layers.ImageConverter(scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET))
        check_normalization(model)  # ImageNet's own: accepted
    finally:
        model.preprocessor = kept


def test_a_failure_between_conversion_and_metadata_leaves_no_file(exported, tmp_path, monkeypatch):
    """The file is converted in the private temporary folder and written once, with its
    metadata: a failure (or a kill) between the two steps leaves nothing at the output
    (before, a file without metadata stood there)."""
    from keras_pf.mobile import metadata

    def broken(*args, **kwargs):
        raise RuntimeError("attaching the metadata failed")

    monkeypatch.setattr(metadata, "attach_metadata", broken)
    with pytest.raises(RuntimeError, match="attaching the metadata failed"):
        export_segmenter(exported[0], tmp_path / "seg.tflite", labels=LABELS)
    assert os.listdir(tmp_path) == []
