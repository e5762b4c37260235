"""Int8 files that run on the phone's CPU delegate: ops XNNPACK has no int8 kernel for stay
float (read off the file, not listed by hand), the hybrid's average pool becomes an exact
fixed depthwise convolution, and a trained model's int8 file agrees with it on images
it was not calibrated on."""

import numpy as np
import pytest

import keras
import keras_pf
from keras_pf.benchmark import run as benchmark
from keras_pf.mobile import export
from keras_pf.mobile import rewrite
from keras_pf.mobile.check import integer_ops, tflite_ops, undelegated_ops, weight_dtypes

TRANSFORMERS = {
    "vit": lambda: keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, patch_size=8,
                                  input_shape=(32, 32, 3), weights=None, classes=4,
                                  classifier_activation=None),
    "pit": lambda: keras_pf.PFPiT(base_dims=(8, 8), depths=(2, 2), heads=(2, 4), patch_size=8,
                                  stride=4, input_shape=(32, 32, 3), weights=None, classes=4,
                                  classifier_activation=None),
}
# XNNPACK has no int8 kernel for these: quantized, they run on TFLite's reference kernels
NO_INT8_KERNEL = {"GELU", "BATCH_MATMUL", "SOFTMAX", "RSQRT", "SQUARED_DIFFERENCE"}


def _images(n, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
def test_int8_keeps_float_only_what_xnnpack_cannot_run_in_int8(family, tmp_path):
    model = TRANSFORMERS[family]()
    calibration = _images(8)
    full = export.export_tflite(model, tmp_path / "full.tflite", "int8", calibration=calibration,
                                float_fallback=False, metadata=False)
    left_out = undelegated_ops(full)
    assert NO_INT8_KERNEL <= set(left_out), left_out  # the problem exists in this graph

    path = export.export_tflite(model, tmp_path / "int8.tflite", "int8", calibration=calibration,
                                metadata=False)
    assert undelegated_ops(path) == {}
    # the matrix multiplications with weights stay int8
    assert weight_dtypes(path)["FULLY_CONNECTED"] == ["int8"]
    assert integer_ops(path) == integer_ops(full) - left_out["BATCH_MATMUL"]
    # the float ops sit between QUANTIZE/DEQUANTIZE pairs (accuracy: the trained model below)
    assert tflite_ops(path).count("DEQUANTIZE") > tflite_ops(full).count("DEQUANTIZE")


def test_cli_int8_check_is_held_out_and_full_int8_flag(tmp_path, capsys):
    from keras_pf_cli import main

    saved = tmp_path / "vit.keras"
    TRANSFORMERS["vit"]().save(saved)
    calibration = tmp_path / "calib"
    calibration.mkdir()
    for i, pixels in enumerate(np.random.default_rng(0).integers(0, 255, (12, 40, 40, 3))):
        keras.utils.save_img(calibration / f"{i}.png", pixels.astype("uint8"))
    paths = {}
    for flag in ([], ["--full-int8"]):
        out = tmp_path / f"int8{len(flag)}.tflite"
        assert main(["export", str(saved), "--precision", "int8", "--calibration",
                     str(calibration), "--check", "-o", str(out), *flag]) == 0
        paths[bool(flag)] = out
        printed = capsys.readouterr().out
        # the check runs on images the int8 file was not calibrated on
        assert "check images: 6 images held out from the 6 calibration images" in printed
    assert undelegated_ops(paths[False]) == {}
    assert "GELU" in undelegated_ops(paths[True])


def test_a_renamed_node_is_found_by_its_calibrated_name():
    from keras_pf.mobile.int8 import _calibrated_name

    names = {"SOFTMAX": ["out:0", "block/Softmax"], "ADD": ["out:0_add"]}
    assert _calibrated_name(names, "SOFTMAX", "block/Softmax") == "block/Softmax"
    assert _calibrated_name(names, "SOFTMAX", "out:01") == "out:0"  # uniquified by the quantizer
    assert _calibrated_name(names, "ADD", "out:01") is None  # same prefix, other op
    assert _calibrated_name(names, "GELU", "x") is None


def test_split_held_out_is_disjoint_and_complete():
    images = np.arange(10)[:, None] * np.ones((1, 3))
    rest, held = export.split_held_out(images, 4)
    assert len(held) == 4 and len(rest) == 6
    assert sorted(np.concatenate([rest, held])[:, 0]) == list(range(10))
    assert len(np.unique(held[:, 0])) == 4 and not set(held[:, 0]) & set(rest[:, 0])
    rest, held = export.split_held_out(images[:1], 4)  # one image: nothing to hold out
    assert held is None and len(rest) == 1


# ---------------------------------------------------------------------------- rewrite


def test_average_pool_rewrite_is_exact_and_reaches_nested_models(small_resnet):
    backbone = small_resnet(classes=10, classifier_activation=None)
    pools = [layer.name for layer in backbone.layers
             if isinstance(layer, keras.layers.AveragePooling2D)]
    assert pools  # the hybrid's stride-2 blocks
    inputs = keras.Input((64, 64, 3))
    outer = keras.Model(inputs, keras.layers.Dense(3)(backbone(inputs)))  # a fine-tuned model
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    for model in (backbone, outer):
        rewritten = rewrite.average_pools_as_convolutions(model)
        inner = rewritten if model is backbone else rewritten.layers[1]
        assert not [l for l in inner.layers if isinstance(l, keras.layers.AveragePooling2D)]
        assert {l.name for l in inner.layers} >= {p + "_as_depthwise" for p in pools}
        np.testing.assert_allclose(np.asarray(rewritten(x)), np.asarray(model(x)), atol=2e-6)
    # the original is not changed
    assert [l.name for l in backbone.layers if isinstance(l, keras.layers.AveragePooling2D)] == pools


def test_overlapping_or_padded_pools_are_left_alone():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.AveragePooling2D(3, strides=2)(inputs)
    x = keras.layers.AveragePooling2D(2, strides=2, padding="same")(x)
    model = keras.Model(inputs, x)
    assert rewrite.average_pools_as_convolutions(model) is model


def test_int8_file_of_the_hybrid_runs_its_pools_as_depthwise_convolutions(small_resnet, tmp_path,
                                                                         capsys):
    model = small_resnet()  # softmax head, as the named models
    path = export.export_tflite(model, tmp_path / "int8.tflite", "int8",
                                calibration=_images(8, 64), metadata=False)
    ops = tflite_ops(path)
    assert "AVERAGE_POOL_2D" not in ops and "DEPTHWISE_CONV_2D" in ops
    assert weight_dtypes(path)["DEPTHWISE_CONV_2D"] == ["int8"]
    # the head's SOFTMAX is the model output, which the quantizer renames: it is kept
    # float all the same, and the export says so only because it is
    assert undelegated_ops(path) == {}
    assert "int8: kept float (no int8 kernel in XNNPACK): SOFTMAX x1" in capsys.readouterr().out
    # float files keep the pool (nothing to gain there)
    float_path = export.export_tflite(model, tmp_path / "f.tflite", metadata=False)
    assert "AVERAGE_POOL_2D" in tflite_ops(float_path)


# ---------------------------------------------------------------- fidelity, trained


def test_trained_model_int8_agrees_on_held_out_images(tmp_path):
    keras.utils.set_random_seed(0)
    model = TRANSFORMERS["pit"]()
    result = benchmark.int8_fidelity(model, str(tmp_path), "pit", epochs=6, train_images=1024,
                                     test_images=128, calibration_images=32,
                                     precisions=("float32", "int8"))
    assert result["keras_top1"] > 0.6, result  # chance is 0.25: the predictions mean something
    assert result["float32"]["top1_agreement"] == 1.0
    assert result["float32"]["relative_error"] < 1e-4
    assert result["int8"]["top1_agreement"] >= 0.9, result
    assert result["int8"]["relative_error"] < 0.15, result


def test_grating_images_are_deterministic_and_balanced():
    a, labels = benchmark.grating_images(400, 16, classes=4, seed=3)
    b, same = benchmark.grating_images(400, 16, classes=4, seed=3)
    c, _ = benchmark.grating_images(400, 16, classes=4, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels, same)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    assert np.bincount(labels, minlength=4).min() > 60
