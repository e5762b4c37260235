"""keras_pf.export: ONNX, OpenVINO and SavedModel files of each family load in their own
runtime (ONNX Runtime, OpenVINO, the serving signature) and match Keras at 1e-4 of the
logits' scale; bad input is one line, exit 2, nothing left behind."""

import os

import numpy as np
import pytest

import keras
from keras_pf import export as formats
from keras_pf.models.resolve import MODEL_NAMES
from keras_pf_cli import main

SIZE = 64
SERVER = ("onnx", "openvino", "saved_model")
RUNTIME_MODULE = {"onnx": "onnxruntime", "openvino": "openvino", "saved_model": "tensorflow"}
OUTPUT = {"onnx": "m.onnx", "openvino": "m.xml", "saved_model": "m_savedmodel"}
LABELS = [f"class {i}" for i in range(10)]


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture
def other_filesystem_tmpdir(monkeypatch, tmp_path_factory):
    """$TMPDIR on another filesystem than the output where the machine has one (/dev/shm,
    as a tmpfs /tmp is): files staged in the private temporary folder must be copied,
    not renamed, into place, and leave nothing beside the output."""
    import shutil
    import tempfile

    out_dev = os.stat(tmp_path_factory.getbasetemp()).st_dev
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == out_dev:
        yield None
        return
    folder = tempfile.mkdtemp(dir="/dev/shm", prefix="keras_pf_tests_")
    monkeypatch.setattr(tempfile, "tempdir", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _runtime(fmt):
    pytest.importorskip(RUNTIME_MODULE[fmt])
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")


# ResNet and PiT take pixels (normalization inside), ViT preprocessed tensors. The default
# tier runs every format once and ONNX (where GELU once broke) with both families and
# both preprocessing choices; the other pairs (a SavedModel export and OpenVINO's
# conversion of it are 10-20 s each) are the slow tier.
_slow = pytest.mark.slow
FORMAT_CASES = [("onnx", "resnet", True), ("onnx", "vit", False),
                ("openvino", "resnet", True), ("saved_model", "vit", False),
                pytest.param("openvino", "vit", False, marks=_slow),
                pytest.param("saved_model", "resnet", True, marks=_slow)] + [
                pytest.param(fmt, "pit", True, marks=_slow) for fmt in SERVER]


@pytest.mark.parametrize("fmt, family, preprocessing", FORMAT_CASES)
def test_file_runs_in_its_runtime_and_matches_keras(fmt, family, preprocessing, tiny_family,
                                                    tmp_path, other_filesystem_tmpdir):
    from keras_pf.models.imagenet import preprocess_input

    _runtime(fmt)
    model = tiny_family(family)
    path = formats.export_model(model, tmp_path / OUTPUT[fmt], fmt,
                                include_preprocessing=preprocessing, labels=LABELS)
    images = _pixels(4) if preprocessing else preprocess_input(_pixels(4))
    # the file in its own runtime, against Keras computed here (not by the check)
    outputs = formats.run_model(path, images, fmt)
    expected = np.asarray(model(preprocess_input(_pixels(4)) if preprocessing else images))
    assert np.abs(outputs - expected).max() <= 1e-4 * np.abs(expected).max()
    report = formats.check_model(model, path, images, fmt, preprocessing)
    assert report["matches"] and report["top1_agreement"] == 1.0, report
    # a variable batch: one image and three give the same per-image outputs
    np.testing.assert_allclose(formats.run_model(path, images[:1], fmt), outputs[:1],
                               rtol=1e-5, atol=1e-5)
    assert open(formats.labels_path(path, fmt)).read().splitlines() == LABELS
    written = sorted(os.listdir(tmp_path))  # no temporary file or folder left
    if other_filesystem_tmpdir:  # nor in the private temporary folder
        private = os.path.join(other_filesystem_tmpdir, f"keras_pf-{os.getuid()}")
        assert not os.path.isdir(private) or os.listdir(private) == []
    expected_files = {"onnx": ["m.labels.txt", "m.onnx"],
                      "openvino": ["m.bin", "m.labels.txt", "m.xml"],
                      "saved_model": ["m_savedmodel", "m_savedmodel.labels.txt"]}[fmt]
    assert written == expected_files


def test_onnx_graph_has_erf_and_no_erfc_for_transformers(tiny_family, tmp_path):
    onnx = pytest.importorskip("onnx")
    _runtime("onnx")
    path = formats.export_model(tiny_family("vit"), tmp_path / "vit.onnx", "onnx")
    graph = onnx.load(path).graph
    ops = {node.op_type for node in graph.node}
    assert "Erf" in ops and "Erfc" not in ops
    assert [i.name for i in graph.input] == ["image"] and graph.output[0].name == "logits"
    assert not graph.input[0].type.tensor_type.shape.dim[0].dim_value  # variable batch


def test_keras_gelu_in_an_old_model_is_rewritten_for_onnx(tmp_path):
    """A model with Keras' own "gelu" (erfc on TensorFlow: a fine-tuned .keras file saved
    before keras_pf's GELU went through erf, or any user head) still exports."""
    onnx = pytest.importorskip("onnx")
    _runtime("onnx")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(16)(inputs)
    x = keras.layers.Activation("gelu")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Dense(4)(x))
    model = keras.Model(inputs, x)
    path = formats.export_model(model, tmp_path / "old.onnx", "onnx")
    assert "Erfc" not in {n.op_type for n in onnx.load(path).graph.node}
    x = np.random.default_rng(0).normal(0, 3, (5, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(formats.run_model(path, x, "onnx"), np.asarray(model(x)), atol=1e-5)


@pytest.mark.slow  # the CLI test below exports with --uint8-input too
def test_uint8_pixels_in(tiny_family, tmp_path):
    _runtime("onnx")
    model = tiny_family("resnet")
    path = formats.export_model(model, tmp_path / "u8.onnx", "onnx", include_preprocessing=True,
                                input_dtype="uint8")
    pixels = np.round(_pixels(2, seed=3)).astype("uint8")
    assert formats.check_model(model, path, pixels, "onnx", True)["matches"]


# ---------------------------------------------------------------------- bad input


@keras.saving.register_keras_serializable("keras_pf_tests")
class Lgamma(keras.layers.Layer):
    """A layer whose op neither ONNX nor OpenVINO has (TensorFlow's Lgamma)."""

    def call(self, x):
        import tensorflow as tf

        return tf.math.lgamma(keras.ops.abs(x) + 1.0)


def _inexpressible():
    inputs = keras.Input((16, 16, 3))
    x = Lgamma()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("fmt, needle", [("onnx", "no operator for Lgamma x1"),
                                         ("openvino", "No conversion rule found for operations: Lgamma")])
def test_a_model_the_format_cannot_express_is_one_error_and_no_file(fmt, needle, tmp_path):
    _runtime(fmt)
    with pytest.raises(ValueError, match=needle) as error:
        formats.export_model(_inexpressible(), tmp_path / OUTPUT[fmt], fmt)
    assert "nothing was written" in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt, output, needle", [
    ("onnx", "m.tflite", "must end with '.onnx'"),
    ("onnx", ".onnx", "must end with '.onnx'"),
    ("openvino", "m.onnx", "must end with '.xml'"),
    ("saved_model", "m.onnx", "SavedModel is a folder"),
])
def test_wrong_suffix_is_refused_before_any_work(fmt, output, needle, tiny_family, tmp_path):
    _runtime(fmt)
    with pytest.raises(ValueError, match=needle):
        formats.export_model(tiny_family("resnet"), tmp_path / output, fmt)
    assert os.listdir(tmp_path) == []


def test_saved_model_refuses_a_folder_that_is_not_one(tiny_family, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a SavedModel"):
        formats.export_model(tiny_family("resnet"), tmp_path / "photos", "saved_model")
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]
    assert sorted(os.listdir(tmp_path)) == ["photos"]


@pytest.mark.slow  # two SavedModel exports
def test_saved_model_replaces_a_saved_model(tiny_family, tmp_path):
    model = tiny_family("resnet")
    path = formats.export_model(model, tmp_path / "sm", "saved_model")
    first = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    formats.export_model(model, tmp_path / "sm", "saved_model")  # replaced in place
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) >= first
    assert sorted(os.listdir(tmp_path)) == ["sm"]


def test_unknown_format(tiny_family, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        formats.export_model(tiny_family("resnet"), tmp_path / "m.pt", "torchscript")


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def saved_keras(tiny_family, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    tiny_family("vit").save(path)
    return path


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("openvino", marks=_slow),
                                 pytest.param("saved_model", marks=_slow)])
def test_cli_exports_and_checks_a_keras_file(fmt, saved_keras, tmp_path, capsys):
    _runtime(fmt)
    out = tmp_path / OUTPUT[fmt]
    assert main(["export", str(saved_keras), "--format", fmt, "-o", str(out), "--check",
                 "--uint8-input"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "| 100.0% |" in printed


@pytest.mark.slow
def test_cli_onnx_of_a_named_model_straight_after_construction(tmp_path, capsys):
    _runtime("onnx")
    out = tmp_path / "pit.onnx"
    assert main(["export", "PFPiTTiny", "--weights", "none", "--input-size", "64", "--format",
                 "onnx", "-o", str(out), "--check"]) == 0
    assert "| pit.onnx | ONNX Runtime |" in capsys.readouterr().out
    assert len(open(tmp_path / "pit.labels.txt").read().splitlines()) == 1000


def _cli_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_cli_bad_input_is_one_line_and_exit_2(saved_keras, tmp_path, capsys, monkeypatch):
    _runtime("onnx")
    base = ["export", str(saved_keras), "-o"]
    assert "must end with '.onnx'" in _cli_error(base + [str(tmp_path / "m.tflite"), "--format", "onnx"], capsys)
    assert "must end with '.tflite'" in _cli_error(base + [str(tmp_path / "m.onnx")], capsys)
    assert "--precision int8 is for --format litert" in _cli_error(
        base + [str(tmp_path / "m.onnx"), "--format", "onnx", "--precision", "int8"], capsys)
    assert "--no-metadata is for --format litert" in _cli_error(
        base + [str(tmp_path / "m.xml"), "--format", "openvino", "--no-metadata"], capsys)
    # a runtime that is not installed: the pip extra to install
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    err = _cli_error(base + [str(tmp_path / "m.onnx"), "--format", "onnx"], capsys)
    assert "onnxruntime" in err and "pip install 'keras_pf[onnx]'" in err
    assert os.listdir(tmp_path) == []


def test_cli_model_the_format_cannot_express(tmp_path, capsys):
    _runtime("onnx")
    path = tmp_path / "lgamma.keras"
    _inexpressible().save(path)
    err = _cli_error(["export", str(path), "--format", "onnx", "-o", str(tmp_path / "m.onnx")], capsys)
    assert "cannot be expressed in ONNX" in err
    assert sorted(os.listdir(tmp_path)) == ["lgamma.keras"]


# ------------------------------------------------------------- every named model


@pytest.mark.slow  # 10 models x 4 formats: the run kept back from the default tier
@pytest.mark.parametrize("fmt", formats.FORMATS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_named_model_in_every_format(name, fmt, tmp_path):
    """Straight after construction (never called), 64x64 (ViT/PiT resize their position
    embedding), pixels in: the file runs in its own runtime and matches Keras at 1e-4
    of the logits' scale."""
    import keras_pf

    if fmt != "litert":
        _runtime(fmt)
    model = getattr(keras_pf, name)(weights=None, input_shape=(SIZE, SIZE, 3),
                                    classifier_activation=None)
    suffix = {"litert": "m.tflite", **OUTPUT}[fmt]
    path = formats.export_model(model, tmp_path / suffix, fmt, include_preprocessing=True)
    report = formats.check_model(model, path, _pixels(2, seed=5), fmt, True)
    assert report["matches"], report
