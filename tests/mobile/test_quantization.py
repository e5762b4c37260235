"""Quantization-aware training: the tf_keras twin computes what the Keras 3 model does,
QAT trains with `fit`, and its int8 TFLite file keeps the float model's accuracy."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import keras_pf
from keras_pf._compat.tensorflow import ops_details
from keras_pf.mobile import check, export
from keras_pf.mobile import qat as quantization

SMALL = {
    "resnet": lambda: keras_pf.PFResNet(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25,
                                        weights=None, input_shape=(64, 64, 3), classes=10,
                                        classifier_activation=None),
    "vit": lambda: keras_pf.PFViT(embed_dim=48, depth=4, num_heads=3, weights=None,
                                  input_shape=(64, 64, 3), classes=10, classifier_activation=None),
    "pit": lambda: keras_pf.PFPiT(base_dims=(16, 16, 16), depths=(2, 2, 2), heads=(1, 2, 4),
                                  patch_size=16, stride=8, weights=None, input_shape=(64, 64, 3),
                                  classes=10, classifier_activation=None),
}


def test_import_keras_pf_leaves_keras_alone():
    code = ("import os, sys, keras_pf, keras_pf.mobile.export, keras_pf.mobile.qat; "
            "assert 'tensorflow_model_optimization' not in sys.modules; "
            "keras_pf.mobile.qat.import_tfmot(); "
            "assert 'TF_USE_LEGACY_KERAS' not in os.environ, os.environ['TF_USE_LEGACY_KERAS']")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ViT's twin is the slow tier (PiT has the same blocks and the pooling convolution too).
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f == "vit" else f
                                    for f in sorted(SMALL)])
def test_tf_keras_twin_and_qat_model(family, tmp_path):
    model = SMALL[family]()
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    # randomize BatchNorm statistics and embeddings so a missed weight would show
    rng = np.random.default_rng(1)
    for layer in model.layers:
        for w in layer.weights:
            if "moving_variance" in w.path:
                w.assign(rng.uniform(0.5, 2.0, w.shape))
            elif "moving_mean" in w.path or "embedding" in w.path:
                w.assign(rng.normal(0, 0.5, w.shape))
    twin = quantization.to_tf_keras(model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(twin(x).numpy(), model(x), atol=1e-5)

    qat = quantization.quantize_aware(model)
    float_kinds = {why.split(':')[0] for why in qat.float_layers.values()}
    assert all(len(why.split(': ', 1)[1]) > 20 for why in qat.float_layers.values())  # says why
    if family == "resnet":
        assert float_kinds == set()  # every conv, BN (folded), pool, add quantized
    else:
        assert float_kinds == {"LayerNormalization", "PositionEmbedding"}  # attention quantized
    quantized = [layer.name.removeprefix("quant_") for layer in qat.layers  # tfmot's prefix
                 if type(layer).__name__ == "QuantizeWrapperV2"]
    assert any(name.endswith(("patch_embed", "conv1_conv")) for name in quantized)
    assert "predictions" in quantized
    if family != "vit":
        return  # int8 exports of QAT ResNet/PiT: the fine-tune and self-attention tests below
    path = export.export_tflite(qat, tmp_path / "qat.tflite", "int8")
    report = check.check_tflite(model, path, x)
    assert report["dynamic_ops"] == []
    assert report["weight_dtypes"]["CONV_2D"] == ["int8"]
    assert "int8" in report["weight_dtypes"]["FULLY_CONNECTED"]
    if family == "vit":  # calibration at export: the MLPs' first layers (after LayerNorm) int8 too
        calibrated = export.export_tflite(qat, tmp_path / "qat_cal.tflite", "int8", calibration=x)
        assert check.weight_dtypes(calibrated)["FULLY_CONNECTED"] == ["int8"]
        assert check.integer_ops(calibrated) > check.integer_ops(path)


def test_fine_tuned_model_with_nested_backbone_is_rebuilt_and_quantized():
    from keras_pf.training.finetune import build_model

    model, backbone = build_model("PFResNet", 3, 64, None,
                                  {"block": "hybrid", "depths": [1, 1, 1, 1], "width_mult": 0.25},
                                  dropout=0.1)
    assert any(layer is backbone for layer in model.layers)  # nested, as finetune builds it
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    twin = quantization.to_tf_keras(model)
    np.testing.assert_allclose(twin(x).numpy(), model(x), atol=1e-5)
    qat = quantization.quantize_aware(model)
    quantized = {layer.name for layer in qat.layers if type(layer).__name__ == "QuantizeWrapperV2"}
    assert {"quant_logits", "quant_conv1_conv"} <= quantized and qat.float_layers == {}


def test_qat_file_is_converted_from_the_frozen_function_not_a_saved_model(tmp_path, monkeypatch):
    """Given the model, TFLite's converter first saved it (training functions and optimizer
    too) to a SavedModel in tempfile's folder and loaded it back: 22 of 25 s of a tiny QAT
    export, and a folder a kill left behind outside keras_pf.tempfiles."""
    import tempfile

    from tensorflow.lite.python import lite

    saved = []
    real_save = lite._save.save
    monkeypatch.setattr(lite._save, "save", lambda *a, **k: saved.append(a[1]) or real_save(*a, **k))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    qat = quantization.quantize_aware(SMALL["resnet"]())
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    path = export.export_tflite(qat, tmp_path / "qat.tflite", "int8", calibration=x)
    assert saved == []
    assert check.check_precision(str(path), "int8") is None
    assert check.interpreter(path).get_signature_list() == {
        "serving_default": {"inputs": ["image"], "outputs": ["output_0"]}}
    # no folder beside keras_pf's own (autograph's generated .py files are TensorFlow's)
    folders = [entry.name for entry in os.scandir(tmp_path / "tmp") if entry.is_dir()]
    assert all(name.startswith("keras_pf-") for name in folders), folders


def _quadrant_task(n, seed, size=32):
    """Which quadrant holds the bright square, on noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, (n, size, size, 3)).astype("float32")
    y = rng.integers(0, 4, n)
    half, side = size // 2, 8
    for i, label in enumerate(y):
        top = (label // 2) * half + rng.integers(0, half - side)
        left = (label % 2) * half + rng.integers(0, half - side)
        x[i, top:top + side, left:left + side, rng.integers(0, 3)] += 2.5
    return x, y


@pytest.mark.slow  # a QAT fine-tune; the MediaPipe test of test_mobile runs a shorter one
def test_qat_fine_tune_keeps_float_accuracy_in_int8(tmp_path):
    keras.utils.set_random_seed(0)
    x_train, y_train = _quadrant_task(1200, seed=0)
    x_test, y_test = _quadrant_task(300, seed=1)
    model = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                              input_shape=(32, 32, 3), classes=4, classifier_activation=None)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=32, epochs=6, verbose=0)
    float_acc = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    assert float_acc > 0.8, f"the float model did not learn the task: {float_acc:.3f}"

    qat = quantization.quantize_aware(model)
    import tf_keras

    qat.compile(tf_keras.optimizers.Adam(5e-4),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = qat.evaluate(x_train[:256], y_train[:256], verbose=0)
    history = qat.fit(x_train, y_train, batch_size=32, epochs=2, verbose=0)
    assert history.history["loss"][-1] < before  # it trains

    path = export.export_tflite(qat, tmp_path / "qat_int8.tflite", "int8")
    assert check.weight_dtypes(path) == {"CONV_2D": ["int8"], "FULLY_CONNECTED": ["int8"]}
    int8_acc = float(np.mean(np.argmax(check.run_tflite(path, x_test), -1) == y_test))
    print(f"float Keras accuracy {float_acc:.3f}, QAT int8 TFLite accuracy {int8_acc:.3f}")
    assert int8_acc >= float_acc - 0.02, (float_acc, int8_acc)


TINY_ATTENTION = {
    "vit": lambda: keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, weights=None,
                                  input_shape=(32, 32, 3), classes=4, classifier_activation=None),
    "pit": lambda: keras_pf.PFPiT(base_dims=(16, 16), depths=(2, 2), heads=(1, 2), patch_size=8,
                                  stride=4, weights=None, input_shape=(32, 32, 3), classes=4,
                                  classifier_activation=None),
}


def _attention_fully_connected(path):
    """`[(input dtype, stored weight dtype)]` of the file's FULLY_CONNECTED ops whose weight
    belongs to an attention layer (tensor names keep the Keras layer names, `..._attn/...`)."""
    from keras_pf.mobile import check

    interp = check.interpreter(path, delegate=False)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    found = []
    for op in ops_details(interp):
        if op["op_name"] == "FULLY_CONNECTED":
            data, weight = (tensors[i] for i in op["inputs"][:2])
            if "_attn/" in weight["name"]:
                found.append((np.dtype(data["dtype"]).name, np.dtype(weight["dtype"]).name))
    return found


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f == "pit" else f
                                    for f in sorted(TINY_ATTENTION)])
def test_qat_quantizes_self_attention(family, tmp_path):
    import tf_keras

    keras.utils.set_random_seed(0)
    model = TINY_ATTENTION[family]()
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    attention = [layer for layer in model.layers
                 if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert attention
    qat = quantization.quantize_aware(model)
    float_kinds = {why.split(':')[0] for why in qat.float_layers.values()}
    assert float_kinds == {"LayerNormalization", "PositionEmbedding"}, qat.float_layers

    for layer in attention:  # the QuantizeConfig fake-quantizes the Keras layer's four kernels
        wrapper = qat.get_layer("quant_" + layer.name)
        assert type(wrapper).__name__ == "QuantizeWrapperV2"
        inner = wrapper.layer.attention
        quantized = [weight for weight, _, _ in wrapper._weight_vars]
        assert [w.name for w in quantized] == [
            f"{layer.name}/{part}/kernel:0" for part in ("query", "key", "value", "attention_output")]
        trainable = {v.ref() for v in qat.trainable_weights}
        assert all(w.ref() in trainable for w in quantized)
        for weight, dense in zip(quantized, (layer._query_dense, layer._key_dense,
                                             layer._value_dense, layer._output_dense)):
            np.testing.assert_array_equal(weight.numpy(), dense.kernel.numpy())

        # before training the wrapped layer computes what the Keras layer does, within
        # fake-quant error: a training-mode call sets the kernels' ranges (no weight
        # changes); activations keep tfmot's initial [-6, 6] range, one step 12/255
        tokens = np.random.default_rng(1).normal(size=(8,) + wrapper.input_shape[1:])
        tokens = tokens.astype("float32")
        wrapper(tokens, training=True)
        error = np.abs(wrapper(tokens, training=False).numpy() - np.asarray(layer(tokens, tokens)))
        step = 12 / 255
        assert error.mean() < step and error.max() < 4 * step, (error.mean(), error.max())

    y = np.arange(8) % 4
    qat.compile(tf_keras.optimizers.Adam(1e-3),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper = qat.get_layer("quant_" + attention[0].name)
    before = wrapper._weight_vars[0][0].numpy().copy()
    history = qat.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert not np.array_equal(wrapper._weight_vars[0][0].numpy(), before)  # attention trains

    path = export.export_tflite(qat, tmp_path / "qat.tflite", "int8")
    # query, key, value and output projections: int8 weights on int8 inputs
    assert _attention_fully_connected(path) == [("int8", "int8")] * (4 * len(attention))


def test_attention_with_a_separate_value_stays_float_with_its_reason():
    inputs = keras.Input((4, 4, 8))
    tokens = keras.layers.Reshape((16, 8))(inputs)
    value = keras.layers.Dense(8, name="value_proj")(tokens)
    x = keras.layers.MultiHeadAttention(2, key_dim=4, name="cross_attn")(tokens, value)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    twin = quantization.to_tf_keras(model)
    np.testing.assert_allclose(twin(x).numpy(), model(x), atol=1e-5)
    qat = quantization.quantize_aware(model)
    assert list(qat.float_layers) == ["cross_attn"]
    assert qat.float_layers["cross_attn"].startswith("MultiHeadAttention: called with a separate value")
