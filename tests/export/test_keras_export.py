"""Keras' own `model.export(path, format=...)` on keras_pf models, as a user calls it
(after calling the model once: Keras' exporter refuses a model never called), and the
exact GELU through `erf` that makes the ONNX file loadable."""

import math
import os

import numpy as np
import pytest

import keras
import keras_pf
from keras_pf.models.layers import gelu
from keras_pf.mobile.check import run_tflite, tflite_ops

FAMILIES = ("resnet", "vit", "pit")


def _images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 64, 64, 3)).astype("float32")


def _called(model):
    model(np.zeros((1, 64, 64, 3), "float32"))
    return model


def test_keras_exporter_refuses_a_model_never_called(tiny_family, tmp_path):
    # the Keras quirk keras-pf export works around (tests/test_export_formats.py exports
    # fresh models); if Keras drops it, the README's export note can go
    pytest.importorskip("tf2onnx")
    fresh = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                              input_shape=(64, 64, 3), classes=4)
    with pytest.raises(ValueError, match="never called"):
        fresh.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)


# ViT in the default tier (its GELU must stay one builtin op), the others slow.
@pytest.mark.parametrize("family", [pytest.param("resnet", marks=pytest.mark.slow), "vit",
                                    pytest.param("pit", marks=pytest.mark.slow)])
def test_keras_litert_export_is_builtins_only_and_matches(family, tiny_family, tmp_path):
    model = _called(tiny_family(family))
    path = str(tmp_path / f"{family}.tflite")
    model.export(path, format="litert", verbose=False)
    ops = set(tflite_ops(path))
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    if family != "resnet":
        assert "GELU" in ops  # the erf formulation is fused to TFLite's own op
    x = _images()
    expected = np.asarray(model(x))
    assert np.abs(run_tflite(path, x) - expected).max() <= 1e-4 * np.abs(expected).max()


# PiT: Keras runs its grouped pooling convolution as a nested XLA function, which tf2onnx
# leaves in the graph as StatefulPartitionedCall; keras-pf export rewrites it
# (keras_pf/export/rewrite.py). Strict: when Keras or tf2onnx fix it, this says so.
@pytest.mark.parametrize("family", [
    pytest.param("resnet", marks=pytest.mark.slow), "vit",
    pytest.param("pit", marks=[pytest.mark.slow, pytest.mark.xfail(
        strict=True, reason="Keras' grouped Conv2D is an XLA function tf2onnx cannot inline")])])
def test_keras_onnx_export_loads_in_onnxruntime_and_matches(family, tiny_family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    model = _called(tiny_family(family))
    path = str(tmp_path / f"{family}.onnx")
    model.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # Erfc: INVALID_GRAPH
    x = _images()
    expected = np.asarray(model(x))
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()


# ------------------------------------------------------------------------------ GELU


def test_gelu_is_the_exact_erf_formula():
    x = np.concatenate([np.linspace(-12, 12, 481), [-30.0, -6.5, 0.0, 1e-3, 30.0]]).astype("float32")
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype("float64")])
    ours = np.asarray(gelu(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours, np.asarray(keras.activations.gelu(x, approximate=False)),
                               rtol=1e-6, atol=1e-6)


def test_transformers_use_it_and_saved_files_load(tiny_family, tmp_path):
    model = tiny_family("vit")
    activations = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
    assert activations and all(layer.activation is gelu for layer in activations)
    assert {layer.name for layer in activations} >= {"block0_mlp_gelu", "block1_mixer_gelu1"}
    path = tmp_path / "vit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("block1_mixer_gelu2").activation is gelu
    x = _images(2)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_a_file_saved_with_keras_gelu_still_loads(tmp_path):
    # .keras files written before the change name Keras' own "gelu"
    inputs = keras.Input((4,))
    old = keras.Model(inputs, keras.layers.Activation("gelu", name="block0_mlp_gelu")(inputs))
    old.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert loaded.get_layer("block0_mlp_gelu").activation is keras.activations.gelu
    assert os.path.getsize(tmp_path / "old.keras") > 0
