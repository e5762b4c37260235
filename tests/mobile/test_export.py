"""TFLite export: every named model converts to a static batch-1 file that matches Keras,
reduced precisions shrink the file and keep the outputs, and the checks can fail."""

import os
import warnings

import numpy as np
import pytest

import keras
import keras_pf
from keras_pf.mobile import calibration, check, export
from keras_pf.mobile.labels import labels_path
from keras_pf.models.imagenet import preprocess_input

SIZE = 64


def _images(n, size=SIZE, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def _static_batch1(path, size):
    inp = check.interpreter(path).get_input_details()[0]
    return list(inp["shape"]) == [1, size, size, 3] and -1 not in list(inp["shape_signature"])


# PFResNet50 is PFResNet50Hybrid under another name; PFViTBase and PFPiTBase are the
# Small models' code at a larger width (80-90 M weights take 25-45 s each to convert on
# CI), so they are left out here; PiT-B's own patch 14 / stride 7 is covered by a small
# generic PiT below.
# PFResNet50Plain, PFResNet50Max, PFViTSmall, PFViTTiny and PFPiTTiny are marked slow
# (`-m slow`), for time: the max block and ViT-max are in the parity cases'
# TFLite test (the plain block in the Keras parity test), the Tiny models are the Small
# models' code at another width, and
# PFResNet50Hybrid and PFPiTSmall stay as the named ResNet and transformer here.
# PiT-S: PiT is exported in the default tier by the parity case pit_max_64 below
LONG_ONLY = {"PFResNet50Plain", "PFResNet50Max", "PFViTSmall", "PFViTTiny", "PFPiTTiny", "PFPiTSmall"}
NAMED = [pytest.param(name, marks=pytest.mark.slow) if name in LONG_ONLY else name
         for name in sorted(set(keras_pf.MODELS) - {"PFResNet50", "PFViTBase", "PFPiTBase"})]
FULL_SIZE = {"PFResNet50Hybrid"}  # one full 224x224 export; the rest at 64x64


def _check_float32(model, path, size):
    report = check.check_tflite(model, path, _images(2, size))
    assert report["max_abs_diff"] < 1e-4, report
    assert report["dynamic_ops"] == []
    assert _static_batch1(path, size)
    return report


@pytest.mark.parametrize("name", NAMED)
def test_named_model_float32_matches_keras_and_is_static(name, tmp_path):
    size = 224 if name in FULL_SIZE else SIZE
    model = keras_pf.MODELS[name](weights=None, input_shape=(size, size, 3),
                                  classifier_activation=None)
    path = export.export_tflite(model, tmp_path / f"{name}.tflite")
    report = _check_float32(model, path, size)
    if name.startswith("PFResNet"):  # every op runs on XNNPACK
        assert report["undelegated_ops"] == {}, report["undelegated_ops"]
        # BatchNorm folded into the convs, ReLU fused, no layout shuffles
        assert set(check.tflite_ops(path)) <= {"CONV_2D", "PAD", "MAX_POOL_2D",
                                                "AVERAGE_POOL_2D", "ADD", "MEAN",
                                                "FULLY_CONNECTED"}
    # 1000-way classifier: the ImageNet labels beside the file
    labels = open(labels_path(path)).read().splitlines()
    assert len(labels) == 1000 and labels[0] == keras_pf.decode_predictions(
        np.eye(1000)[:1], top=1)[0][0][1]


def test_pit_base_patching_float32(tmp_path):
    model = keras_pf.PFPiT(base_dims=(16, 16, 16), depths=(1, 2, 1), heads=(1, 2, 4),
                           patch_size=14, stride=7, weights=None, input_shape=(SIZE, SIZE, 3),
                           classes=10, classifier_activation=None)
    _check_float32(model, export.export_tflite(model, tmp_path / "pit14.tflite"), SIZE)


@pytest.fixture(scope="module")
def small_model():
    return keras_pf.PFResNet(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25,
                             weights=None, input_shape=(SIZE, SIZE, 3), classes=10,
                             classifier_activation=None)


def test_reduced_precisions_shrink_and_stay_close(small_model, tmp_path):
    images = _images(16, seed=1)
    sizes, reports = {}, {}
    for precision in export.PRECISIONS:
        path = export.export_tflite(small_model, tmp_path / f"{precision}.tflite", precision,
                                    calibration=images if precision == "int8" else None)
        sizes[precision] = os.path.getsize(path)
        reports[precision] = check.check_tflite(small_model, path, images)
        assert reports[precision]["dynamic_ops"] == []
    assert 0.4 < sizes["float16"] / sizes["float32"] < 0.6, sizes
    assert 0.2 < sizes["dynamic"] / sizes["float32"] < 0.35, sizes
    assert 0.2 < sizes["int8"] / sizes["float32"] < 0.35, sizes
    assert reports["float16"]["weight_dtypes"]["CONV_2D"] == ["float16"]
    # the hybrid's average pools run as fixed int8 depthwise convolutions (test_int8.py)
    assert reports["int8"]["weight_dtypes"] == {"CONV_2D": ["int8"], "DEPTHWISE_CONV_2D": ["int8"],
                                                "FULLY_CONNECTED": ["int8"]}
    spread = float(np.ptp(np.asarray(small_model(images))))
    assert reports["float16"]["max_abs_diff"] < 1e-2 * spread
    for precision in ("dynamic", "int8"):
        assert reports[precision]["max_abs_diff"] < 0.1 * spread, (precision, reports[precision])
        assert reports[precision]["top1_agreement"] >= 0.75, (precision, reports[precision])
    # no calibration images: a loud warning that int8 accuracy will suffer, still a file
    with pytest.warns(calibration.CalibrationWarning, match="random"):
        noisy = export.export_tflite(small_model, tmp_path / "noise.tflite", "int8")
    assert os.path.exists(noisy)


def test_dynamic_file_keeps_depthwise_convolutions_float_for_xnnpack(tmp_path, capsys):
    # XNNPACK has no hybrid depthwise kernel: with int8 weights those ops ran on builtin
    # kernels (keras' MobileNetV2 dynamic file: 2.3x its float32 time)
    keras.utils.set_random_seed(0)  # unseeded, one init in CI gave logits of 3e-11 and 5.6% error
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None,
                                           classes=4, classifier_activation=None)
    path = export.export_tflite(model, tmp_path / "dynamic.tflite", "dynamic", metadata=False)
    assert "depthwise convolution(s) kept float" in capsys.readouterr().out
    dtypes = check.weight_dtypes(path)
    assert dtypes["DEPTHWISE_CONV_2D"] == ["float32"] and "int8" in dtypes["CONV_2D"], dtypes
    assert check.undelegated_ops(path) == {}
    images = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype("float32")
    expected = np.asarray(model(images))
    error = np.abs(check.run_tflite(path, images) - expected).mean()
    assert error < 0.05 * np.abs(expected).mean(), error


def test_preprocessing_inside_the_graph(small_model, tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (3, SIZE, SIZE, 3)).astype("uint8")
    expected = np.asarray(small_model(preprocess_input(pixels)))
    path = export.export_tflite(small_model, tmp_path / "pre.tflite", include_preprocessing=True)
    assert np.abs(check.run_tflite(path, pixels.astype("float32")) - expected).max() < 1e-4
    path8 = export.export_tflite(small_model, tmp_path / "pre8.tflite",
                                 include_preprocessing=True, input_dtype="uint8")
    assert check.interpreter(path8).get_input_details()[0]["dtype"] == np.uint8
    assert np.abs(check.run_tflite(path8, pixels) - expected).max() < 1e-4
    # the uint8->float cast is the one op XNNPACK does not take: the coverage check sees it
    assert check.undelegated_ops(path8) == {"CAST": 1}


def test_files_carry_a_serving_signature(small_model, tmp_path):
    """LiteRT's signature runner and Android's runSignature find the model by its
    signature, as in a file converted from Keras' SavedModel export."""
    pixels = np.random.default_rng(3).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")
    for precision, pre, name in (("float32", False, "image"), ("int8", True, "pixels")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = export.export_tflite(small_model, tmp_path / f"{precision}.tflite", precision,
                                        calibration=np.random.default_rng(4).uniform(0, 255, (4, SIZE, SIZE, 3))
                                        if precision == "int8" else None,
                                        include_preprocessing=pre)
        # the graph route's request for quantized-input statistics is not for float inputs
        assert not [w for w in caught if "Statistics for quantized" in str(w.message)]
        interp = check.interpreter(path)
        assert interp.get_signature_list() == {"serving_default": {"inputs": [name], "outputs": ["output_0"]}}
        x = pixels if pre else preprocess_input(pixels)
        got = interp.get_signature_runner()(**{name: x})["output_0"]
        np.testing.assert_array_equal(got, check.run_tflite(path, x))


def test_any_keras_model_and_labels(tmp_path):
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3),
                                           classes=3, classifier_activation=None)
    path = export.export_tflite(model, tmp_path / "mnv2.tflite", labels=["a", "b", "c"])
    report = check.check_tflite(model, path, _images(2, 96))
    assert report["max_abs_diff"] < 1e-4 and report["dynamic_ops"] == []
    assert open(labels_path(path)).read() == "a\nb\nc\n"
    assert sorted(os.listdir(tmp_path)) == ["mnv2.labels.txt", "mnv2.tflite"]  # no temp files


def test_bad_arguments_are_explained(small_model, tmp_path):
    with pytest.raises(ValueError, match=".tflite"):
        export.export_tflite(small_model, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="precision"):
        export.export_tflite(small_model, tmp_path / "m.tflite", precision="int4")
    backbone = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25,
                                 include_top=False, weights=None)
    with pytest.raises(ValueError, match="input_shape=\\(224, 224, 3\\)"):
        export.export_tflite(backbone, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="neither a directory"):
        export.export_tflite(small_model, tmp_path / "m.tflite", "int8", calibration="/no/such")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # the CLI's export and --check also run in test_int8 and tests/export
def test_cli_export_with_check(tmp_path, capsys):
    from keras_pf_cli import main

    out = tmp_path / "vit.tflite"
    code = main(["export", "PFViTTiny", "--weights", "none", "--input-size", "64",
                 "--precision", "float16", "--logits", "-o", str(out), "--check"])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists()
    assert "| float32.tflite |" in printed and "| vit.tflite |" in printed
    assert len(open(labels_path(out)).read().splitlines()) == 1000
    assert main(["export", "NoSuchNet", "-o", str(tmp_path / "x.tflite")]) == 2


@pytest.mark.parametrize("case_name", ["resnet_max_64", "vit_max_64", "pit_max_64"])
def test_tflite_matches_original_pytorch_logits(case_name, tmp_path):
    """Original checkpoints -> Keras -> TFLite float32 reproduces the PyTorch logits."""
    from conftest import ParityCase

    case = ParityCase(case_name)
    model = case.build(weights=str(case.checkpoint))
    path = export.export_tflite(model, tmp_path / f"{case_name}.tflite")
    np.testing.assert_allclose(check.run_tflite(path, case.input_nhwc), case.logits,
                               rtol=0, atol=1e-4)
