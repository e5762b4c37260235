"""Float TFLite graphs the phone GPU delegate accepts: LayerNorm lowered with every
elementwise op's full tensor first, PiT's pooling as a grouped CONV_2D (no depthwise conv
with depth multiplier > 1). The op list is read back from the exported file.

TFLite's GPU delegate rejects a MUL whose operands each are smaller than the other in
some dimension ("MUL requires one tensor that not less than second in all dimensions",
e.g. [1,14,14,1] x [1,1,1,384]) and a DEPTHWISE_CONV_2D with depth multiplier != 1 on
more than one input channel; such ops then run on the CPU, between GPU partitions.
"""

import numpy as np
import pytest

import keras
import keras_pf
from keras_pf._compat.tensorflow import ops_details
from keras_pf.mobile import check, export
from keras_pf.models.layers import BroadcastSafeLayerNormalization

# elementwise ops with two broadcasting operands
BINARY_OPS = {"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM"}


def gpu_blockers(path):
    """Ops of the `.tflite` file the GPU delegate rejects (or that would be, with the
    operands in the other order), one readable line each."""
    interp = check.interpreter(path, delegate=False)
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interp.get_tensor_details()}
    found = []
    for op in ops_details(interp):
        name, inputs = op["op_name"], [shapes[i] for i in op["inputs"] if i >= 0]
        if name in BINARY_OPS and len(inputs) == 2:
            first, second = inputs
            rank = max(len(first), len(second))  # numpy broadcasting aligns on the right
            first, second = ([1] * (rank - len(s)) + s for s in (first, second))
            if any(a < b for a, b in zip(first, second)):
                found.append(f"{name} #{op['index']}: {first} x {second}: the first operand "
                             "is smaller than the second")
        if name == "DEPTHWISE_CONV_2D":
            channels_in, channels_out = inputs[0][-1], shapes[op["outputs"][0]][-1]
            if channels_out != channels_in:
                found.append(f"{name} #{op['index']}: {channels_in} -> {channels_out} "
                             "channels (depth multiplier > 1)")
    return found


def _tiny_vit():
    return keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, input_shape=(32, 32, 3),
                          classes=10, weights=None)


def _tiny_pit():
    return keras_pf.PFPiT(base_dims=(8, 8), depths=(2, 2), heads=(2, 4), patch_size=8,
                          stride=4, input_shape=(32, 32, 3), classes=10, weights=None)


def _randomize(model, seed=0):
    """Non-trivial gamma/beta, so that the converter cannot drop them."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("gamma", "beta")):
            w.assign(rng.normal(1.0 if w.path.endswith("gamma") else 0.0, 0.5, w.shape))
    return model


@pytest.mark.parametrize("build", [_tiny_vit, _tiny_pit], ids=["vit", "pit"])
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_exported_transformers_have_no_gpu_blockers(build, precision, tmp_path):
    model = _randomize(build())
    path = export.export_tflite(model, tmp_path / f"{model.name}.tflite", precision)
    assert gpu_blockers(path) == []
    if model.name == "pf_pit":  # the pooling conv is there, as a grouped convolution
        assert "DEPTHWISE_CONV_2D" not in check.tflite_ops(path)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    tolerance = 1e-4 if precision == "float32" else 5e-2
    np.testing.assert_allclose(check.run_tflite(path, x), model.predict(x, verbose=0),
                               atol=tolerance)


def test_checker_flags_keras_layer_norm_and_depth_multiplier(tmp_path):
    # the two patterns of the original graphs, so the test above can fail
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.LayerNormalization(epsilon=1e-6)(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
    model = _randomize(keras.Model(inputs, x))
    found = gpu_blockers(export.export_tflite(model, tmp_path / "old.tflite"))
    assert any(line.startswith("MUL") and "[1, 16, 16, 1] x [1, 1, 1, 8]" in line
               for line in found), found
    assert any("DEPTHWISE_CONV_2D" in line and "8 -> 16" in line for line in found), found


@pytest.mark.parametrize("axis", [-1, (1, 2, 3), 1])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_layer_norm_equals_keras(axis, center, scale):
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 5, 6, 8)).astype("float32")
    ours = BroadcastSafeLayerNormalization(axis=axis, epsilon=1e-6, center=center, scale=scale)
    theirs = keras.layers.LayerNormalization(axis=axis, epsilon=1e-6, center=center,
                                             scale=scale)
    ours.build(x.shape)
    theirs.build(x.shape)
    assert [(w.name, w.shape) for w in ours.weights] == [(w.name, w.shape)
                                                        for w in theirs.weights]
    rng = np.random.default_rng(1)
    values = [rng.normal(size=w.shape).astype("float32") for w in theirs.weights]
    ours.set_weights(values)
    theirs.set_weights(values)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_layer_norm_float16_and_serialization():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 16)).astype("float16")
    ours = BroadcastSafeLayerNormalization(epsilon=1e-6, dtype="mixed_float16")
    theirs = keras.layers.LayerNormalization(epsilon=1e-6, dtype="mixed_float16")
    y = ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    assert y.dtype == theirs(x).dtype == "float16"
    np.testing.assert_allclose(np.float32(y), np.float32(theirs(x)), atol=2e-3)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(again) is BroadcastSafeLayerNormalization
    assert again.get_config() == ours.get_config()
