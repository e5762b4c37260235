"""Float-equivalent rewrites for the mobile graph: of the Keras model before an int8
conversion, and of a converted dynamic-range file.

XNNPACK, TFLite's CPU delegate, has no int8 kernel for some ops the networks use; in
an int8 file those run on TFLite's reference kernels, several times slower than the
float32 ones. Where a layer has an exact equivalent that XNNPACK does run in int8, the
exported graph uses it instead (what stays is kept float by
`keras_pf.mobile.int8.convert_int8`):

- `AveragePooling2D` with non-overlapping windows (R50-hybrid's 2x2/2 pool) becomes a
  `DepthwiseConv2D` with fixed weights 1/(window area) and no bias: the same sum
  times the same factor (exact for 2x2, where 0.25 is a power of two; also 0.25 is
  exact in symmetric int8 weights, 127 * 0.25/127).

The rewritten model shares every other layer (and its weights) with the original.

In a dynamic-range file (int8 weights, float activations), XNNPACK runs hybrid
convolutions and dense layers but has no hybrid depthwise convolution: those ran on
TFLite's builtin kernels and made keras' MobileNetV2 dynamic file 2.3x slower than its
float32 one. `float_depthwise_weights` stores their weights as float again, the int8
values times their scales, which are the weights the hybrid kernel computes with.
"""

import numpy as np

import keras

from keras_pf._compat.keras import is_functional, nested_layers


def _rewritable(layer):
    """A non-overlapping, unpadded, channels-last average pool."""
    return (isinstance(layer, keras.layers.AveragePooling2D)
            and tuple(layer.pool_size) == tuple(layer.strides)
            and layer.padding == "valid" and layer.data_format == "channels_last")


def _pool_as_convolution(layer):
    pool = tuple(layer.pool_size)
    return keras.layers.DepthwiseConv2D(
        pool, strides=pool, padding="valid", use_bias=False, trainable=False,
        depthwise_initializer=keras.initializers.Constant(1.0 / (pool[0] * pool[1])),
        name=layer.name + "_as_depthwise", dtype=layer.dtype_policy)


def average_pools_as_convolutions(model):
    """`model` with every non-overlapping `AveragePooling2D` (also in nested functional
    models, e.g. a fine-tuned model's backbone) replaced by an equal fixed
    `DepthwiseConv2D`; `model` itself when it has none. The original is not changed."""
    if not is_functional(model) or not any(map(_rewritable, nested_layers(model))):
        return model

    def rewritten(layer):
        if is_functional(layer):
            return average_pools_as_convolutions(layer)
        return _pool_as_convolution(layer) if _rewritable(layer) else layer

    return keras.models.clone_model(model, clone_function=rewritten)


def float_depthwise_weights(content):
    """`(tflite bytes, count)`: `content` (a `.tflite` file's bytes) with the int8 weights
    of every depthwise convolution on float input (a hybrid op) dequantized to float32,
    so that XNNPACK runs it; `count` of them. Weights shared with another tensor are
    left alone."""
    from keras_pf._compat.tensorflow import tflite_flatbuffer_utils, tflite_schema

    schema, flatbuffer_utils = tflite_schema(), tflite_flatbuffer_utils()

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    users = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    count = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.DEPTHWISE_CONV_2D:
                continue
            data, weight = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
            buffer = model.buffers[weight.buffer]
            if (data.type != schema.TensorType.FLOAT32 or weight.type != schema.TensorType.INT8
                    or users[weight.buffer] != 1 or buffer.data is None):
                continue
            values = np.asarray(buffer.data, np.uint8).view(np.int8).reshape(weight.shape)
            q = weight.quantization
            shape = [1] * values.ndim
            if len(q.scale) > 1:  # per channel
                shape[q.quantizedDimension] = -1
            scale = np.asarray(q.scale, np.float32).reshape(shape)
            zero = np.asarray(q.zeroPoint, np.float32).reshape(shape)
            dequantized = (values.astype(np.float32) - zero) * scale
            buffer.data = np.frombuffer(dequantized.astype("<f4").tobytes(), np.uint8)
            weight.type, weight.quantization = schema.TensorType.FLOAT32, None
            count += 1
    if not count:
        return content, 0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), count
