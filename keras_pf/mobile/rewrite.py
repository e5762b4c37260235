"""Float-equivalent rewrites of a Keras model for the int8 mobile graph.

XNNPACK, TFLite's CPU delegate, has no int8 kernel for some ops the networks use; in
an int8 file those run on TFLite's reference kernels, several times slower than the
float32 ones. Where a layer has an exact equivalent that XNNPACK does run in int8, the
exported graph uses it instead (what stays is kept float by
`keras_pf.mobile.quantization.convert_int8`):

- `AveragePooling2D` with non-overlapping windows (R50-hybrid's 2x2/2 pool) becomes a
  `DepthwiseConv2D` with fixed weights 1/(window area) and no bias: the same sum
  times the same factor (exact for 2x2, where 0.25 is a power of two; also 0.25 is
  exact in symmetric int8 weights, 127 * 0.25/127).

The rewritten model shares every other layer (and its weights) with the original.
"""

import keras

from keras_pf.graph import is_functional, nested_layers


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
