"""Exact rewrites of the Keras model before an ONNX conversion.

PiT's pooling layer is a grouped `Conv2D` (one input channel per group, two filters
each; chosen for LiteRT's GPU delegate, see `keras_pf.models.pf_pit`). On TensorFlow, Keras runs
a grouped convolution inside a nested `tf.function(jit_compile=True)`, and tf2onnx does
not inline XLA functions: the ONNX graph keeps a `StatefulPartitionedCall` node that ONNX
Runtime refuses. A `DepthwiseConv2D` with depth multiplier `filters / groups` computes
the same outputs in the same channel order (output `c * M + m` is input channel `c`'s
filter `m` in both), so `grouped_convolutions_as_depthwise` swaps one for the other,
weights reshaped, before the ONNX export. (ONNX has grouped convolutions; the depthwise
form becomes one `Conv` with `group = channels`.)
"""

import keras

from keras_pf._compat.keras import is_functional, nested_layers
from keras_pf.models.layers import builtin_class


def _rewritable(layer):
    """A channels-last 2-D convolution with one input channel per group (groups > 1)."""
    if builtin_class(layer) is not keras.layers.Conv2D or layer.groups == 1:
        return False
    channels = layer.input.shape[-1] if layer.data_format == "channels_last" else None
    return channels == layer.groups


def _as_depthwise(layer):
    return keras.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding,
        depth_multiplier=layer.filters // layer.groups, dilation_rate=layer.dilation_rate,
        activation=layer.activation, use_bias=layer.use_bias, name=layer.name,
        dtype=layer.dtype_policy)


def grouped_convolutions_as_depthwise(model):
    """`model` with every grouped `Conv2D` of one input channel per group (also in
    nested functional models) replaced by the equal `DepthwiseConv2D`, weights copied;
    `model` itself when it has none. The original is not changed."""
    if not is_functional(model) or not any(map(_rewritable, nested_layers(model))):
        return model
    replaced = {}

    def rewritten(layer):
        if is_functional(layer):
            return grouped_convolutions_as_depthwise(layer)
        if _rewritable(layer):
            replaced[layer.name] = layer
            return _as_depthwise(layer)
        return layer

    clone = keras.models.clone_model(model, clone_function=rewritten)
    for layer in clone.layers:
        original = replaced.get(layer.name)
        if original is not None and isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel, *bias = original.get_weights()
            kh, kw = kernel.shape[:2]
            layer.set_weights([kernel.reshape(kh, kw, original.groups, -1), *bias])
    return clone
