"""The Android path, checked with the client Android apps use: MediaPipe Tasks'
ImageClassifier (the same C++ task, through the `mediapipe` Python package) loads the
exported files unchanged, returns class names from their metadata, and scores as LiteRT
does; a fine-tuned model goes through QAT and int8 to the same client.

`mediapipe` cannot share one environment with TensorFlow 2.21 (absl-py/protobuf pins), so
it runs in a subprocess with the interpreter named by KERAS_PF_MEDIAPIPE_PYTHON (the
README's test command makes that venv). Without it the tests skip, except under CI
(CI=true), where they fail."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import keras_pf
from keras_pf.mobile import check, export, metadata
from keras_pf.mobile.labels import labels_path

SIZE = 64
CLIENT = pathlib.Path(__file__).parents[1] / "helpers" / "mediapipe_classify.py"


def mediapipe_python():
    python = os.environ.get("KERAS_PF_MEDIAPIPE_PYTHON")
    if python and os.path.exists(python):
        return os.path.abspath(python)
    message = ("KERAS_PF_MEDIAPIPE_PYTHON does not name a Python with mediapipe installed "
               f"({python!r}); see the README's test command")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def mediapipe_classify(path, pixels, tmp_path):
    """MediaPipe ImageClassifier's `[[name, index, score], ...]` (all classes, best first)
    for each uint8 RGB image."""
    images = tmp_path / "images.npy"
    np.save(images, np.asarray(pixels, dtype="uint8"))
    run = subprocess.run([mediapipe_python(), str(CLIENT), str(path), str(images)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("[")]


def _pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype("uint8")


@pytest.fixture(scope="module")
def named_model():
    # a named model at a small input size (random weights: the scores need not be good,
    # only the same in MediaPipe as in LiteRT)
    return keras_pf.PFResNet50Max(weights=None, input_shape=(SIZE, SIZE, 3))


@pytest.fixture(scope="module")
def small_imagenet_model():
    # the same code as the named models at a fraction of the width: converts in seconds
    return keras_pf.PFResNet(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                             input_shape=(SIZE, SIZE, 3))


# Each named-model export takes 10-20 s on 2 cores: float32 by default, the other
# precisions marked slow (`-m slow`; on the small model always).
@pytest.mark.parametrize("which, precision", [
    pytest.param(which, precision, marks=pytest.mark.slow)
    if which == "named" and precision in ("float16", "dynamic", "int8") else (which, precision)
    for which in ("named", "small") for precision in export.PRECISIONS])
def test_exports_load_in_mediapipe_with_imagenet_names(which, precision, request, tmp_path):
    mediapipe_python()
    model = request.getfixturevalue("named_model" if which == "named" else "small_imagenet_model")
    pixels = _pixels(3)
    path = export.export_tflite(model, tmp_path / f"m_{precision}.tflite", precision,
                                calibration=_pixels(4, seed=1).astype("float32")
                                if precision == "int8" else None,
                                include_preprocessing=True)
    results = mediapipe_classify(path, pixels, tmp_path)
    litert = check.run_tflite(path, pixels.astype("float32"))
    imagenet = open(labels_path(path)).read().splitlines()
    for result, scores in zip(results, litert):
        assert len(result) == 1000
        by_index = {index: (name, score) for name, index, score in result}
        assert all(by_index[i][0] == imagenet[i] for i in range(1000))
        np.testing.assert_allclose([by_index[i][1] for i in range(1000)], scores, atol=1e-5)


def test_metadata_says_what_the_graph_expects(small_imagenet_model, tmp_path):
    path = export.export_tflite(small_imagenet_model, tmp_path / "m.tflite", include_preprocessing=True)
    read = metadata.read_metadata(path)
    model = read["model"]
    assert model.name and model.license and model.version.decode() == keras_pf.__version__
    image = model.subgraphMetadata[0].inputTensorMetadata[0]
    norm = image.processUnits[0].options
    assert list(norm.mean) == [0.0] and list(norm.std) == [1.0]  # normalization is inside
    scores = model.subgraphMetadata[0].outputTensorMetadata[0]
    labels_file = scores.associatedFiles[0]
    assert labels_file.type == metadata.meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    packed = read["files"][labels_file.name.decode()].decode().splitlines()
    assert packed == open(labels_path(path)).read().splitlines()
    # opt-out: the file takes preprocessed tensors; the metadata says the per-channel
    # normalization (MediaPipe refuses it: it cannot normalize per channel)
    raw = export.export_tflite(small_imagenet_model, tmp_path / "raw.tflite", include_preprocessing=False)
    norm = metadata.read_metadata(raw)["model"].subgraphMetadata[0].inputTensorMetadata[0] \
        .processUnits[0].options
    assert len(norm.mean) == 3 and len(set(norm.std)) == 3


def _color_folder(root, per_class, seed):
    """A 3-class image folder anyone can learn: noisy red, green and blue squares."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for name, color in colors.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            image = np.clip(rng.normal(color, 35, (SIZE, SIZE, 3)), 0, 255).astype("uint8")
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


def test_finetune_qat_int8_runs_in_mediapipe_with_the_finetuned_names(tmp_path):
    mediapipe_python()
    import keras

    from keras_pf_cli import main
    from keras_pf.models.imagenet import preprocess_input

    train = _color_folder(tmp_path / "train", 12, seed=0)
    val = _color_folder(tmp_path / "val", 8, seed=1)
    out = tmp_path / "run"
    # 10 epochs of 9 steps from random weights at 1e-3: at 3e-3 (with batches of 4 or 12),
    # held-out accuracy fell to 0.67 or 0.33 in an odd late epoch for 2 of 10 seeds (CI's
    # thread schedule gave 0.67 at the end); at 1e-3 it was 1.0 from the 7th epoch for 6 seeds
    code = main(["finetune", "PFResNet", str(train), "--val", str(val), "--weights", "none",
                 "--model-args", '{"block": "hybrid", "depths": [1, 1, 1, 1], "width_mult": 0.25}',
                 "--image-size", str(SIZE), "--epochs", "10", "--batch-size", "4", "--lr", "1e-3",
                 "--seed", "0", "--qat-epochs", "1", "--export", "int8", "-o", str(out), "--quiet"])
    assert code == 0
    tflite = out / "model.tflite"
    assert check.check_precision(str(tflite), "int8") is None
    # the hybrid's average pools run in XNNPACK after QAT too (fixed depthwise convs);
    # the 3-class softmax head, quantized by QAT, is the one op still outside
    assert set(check.undelegated_ops(tflite)) <= {"SOFTMAX"}, check.undelegated_ops(tflite)
    report = (out / "mobile_report.md").read_text()
    assert "top-1" in report and "KB" in report and "ms" in report
    assert open(out / "model.labels.txt").read().split() == ["blue", "green", "red"]

    held_out = _color_folder(tmp_path / "held_out", 10, seed=2)
    from PIL import Image

    files = sorted(held_out.glob("*/*.png"))
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    results = mediapipe_classify(tflite, pixels, tmp_path)
    names = json.loads((out / "class_names.json").read_text())
    # MediaPipe computes exactly what the file does, under the fine-tuned names
    litert = check.run_tflite(tflite, pixels.astype("float32"))
    for result, scores in zip(results, litert):
        by_index = {index: (name, score) for name, index, score in result}
        assert [by_index[i][0] for i in range(len(names))] == names
        np.testing.assert_allclose([by_index[i][1] for i in range(len(names))], scores, atol=1e-5)
    # and the int8 file keeps the Keras model's predictions. Training is not bitwise
    # repeatable across machines and thread schedules, and after 10 epochs from random
    # weights the float model is sometimes unsure of an image or two of these 30, where
    # int8 may tip it: the bar is 80% here; test_int8 holds a trained model to 90% on 128
    model = keras.saving.load_model(out / "model.keras")
    keras_top1 = np.asarray(model(preprocess_input(pixels.astype("float32")))).argmax(-1)
    agreement = np.mean([r[0][0] == names[k] for r, k in zip(results, keras_top1)])
    truth = [names.index(f.parent.name) for f in files]
    keras_accuracy = np.mean(keras_top1 == truth)
    assert agreement >= 0.8, (agreement, keras_accuracy, report)
    # the Keras model learnt at least two of the classes, so the agreement is not that of
    # a constant (which scores 1/3)
    assert keras_accuracy >= 0.6, (keras_accuracy, report)


def test_cli_exports_a_finetuned_keras_file_with_its_class_names(tmp_path):
    from keras_pf_cli import main
    from keras_pf.training.finetune import build_model

    run = tmp_path / "ft"
    run.mkdir()
    model, _ = build_model("PFResNet", 3, SIZE, None, {"block": "max", "depths": [1, 1, 1, 1],
                                                       "width_mult": 0.25})
    model.save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["cat", "dog", "eel"]))
    out = tmp_path / "ft.tflite"
    assert main(["export", str(run / "model.keras"), "-o", str(out)]) == 0
    assert open(labels_path(out)).read().split() == ["cat", "dog", "eel"]
    assert metadata.read_metadata(out)["files"]["labels.txt"].split() == [b"cat", b"dog", b"eel"]
    labels = tmp_path / "names.txt"
    labels.write_text("ant\nbee\ncow\n")
    assert main(["export", str(run / "model.keras"), "--labels", str(labels), "-o", str(out)]) == 0
    assert open(labels_path(out)).read().split() == ["ant", "bee", "cow"]
    labels.write_text("ant\nbee\n")  # two names for three classes: refused, old file kept
    assert main(["export", str(run / "model.keras"), "--labels", str(labels), "-o", str(out)]) == 2
    assert open(labels_path(out)).read().split() == ["ant", "bee", "cow"]


def test_uint8_input_file_loads_in_mediapipe(small_imagenet_model, tmp_path):
    mediapipe_python()
    path = export.export_tflite(small_imagenet_model, tmp_path / "u8.tflite", "int8",
                                calibration=_pixels(4, seed=1).astype("float32"),
                                include_preprocessing=True, input_dtype="uint8")
    assert check.interpreter(path).get_input_details()[0]["dtype"] == np.uint8
    pixels = _pixels(2)
    results = mediapipe_classify(path, pixels, tmp_path)
    litert = check.run_tflite(path, pixels)
    for result, scores in zip(results, litert):
        by_index = {index: score for _, index, score in result}
        np.testing.assert_allclose([by_index[i] for i in range(1000)], scores, atol=1e-5)


def test_mediapipe_refuses_the_preprocessed_opt_out_as_documented(small_imagenet_model, tmp_path):
    """The opt-out (normalization outside the graph) is for the Task Library: MediaPipe
    cannot normalize per channel. If this starts passing, the README can say so."""
    python = mediapipe_python()
    path = export.export_tflite(small_imagenet_model, tmp_path / "raw.tflite",
                                include_preprocessing=False)
    np.save(tmp_path / "images.npy", _pixels(1))
    run = subprocess.run([python, str(CLIENT), str(path), str(tmp_path / "images.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "normalization" in run.stderr.lower()
