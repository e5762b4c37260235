"""Quantization-aware training (QAT) through tfmot (`quantize_aware`); the file is then
written by `mobile.export.export_tflite(..., precision="int8")` (post-training int8 and
its float fallback: `mobile.int8`).

tfmot 0.8 only quantizes tf_keras (Keras 2) models, so `quantize_aware` rebuilds the
Keras 3 model layer by layer in tf_keras by walking its functional graph (same layer
classes, configs and names; weights copied by name), annotates every layer tfmot's
default 8-bit scheme knows (convolutions, dense, BatchNorm folded into its conv, ReLU,
pools, adds, ...) plus self-attention (a `SelfAttention` twin with its own
QuantizeConfig) and leaves the rest in float: LayerNormalization, the position embedding,
attention called with a separate value. Walking the graph instead of re-running the builders keeps
one definition of each network and works for any functional Keras 3 model.

tfmot is imported here only, lazily: importing it sets TF_USE_LEGACY_KERAS=1 for the
process, which this module undoes, so `import keras_pf` never changes the user's Keras.
"""

import functools
import inspect
import os

import numpy as np

import keras

from keras_pf._compat import tf_keras as tf_keras_compat
from keras_pf._compat.keras import has_graph, is_functional, run_through_graph, tensor_producer
from keras_pf.models.layers import BroadcastSafeLayerNormalization, builtin_class, gelu

_tfmot = None


def import_tfmot():
    """`(tfmot, tf_keras)`, importing tfmot without leaving TF_USE_LEGACY_KERAS behind."""
    global _tfmot
    if _tfmot is None:
        before = os.environ.get("TF_USE_LEGACY_KERAS")
        try:
            import tensorflow_model_optimization as tfmot
        finally:
            if before is None:
                os.environ.pop("TF_USE_LEGACY_KERAS", None)
            else:
                os.environ["TF_USE_LEGACY_KERAS"] = before
        import tf_keras

        _tfmot = (tfmot, tf_keras)
    return _tfmot


@functools.cache
def _position_embedding_class(tf_keras):
    """The tf_keras twin of `keras_pf.models.layers.PositionEmbedding` (float under QAT); one
    class, so that the model built with it and tfmot's quantize scope name the same."""

    class PositionEmbedding(tf_keras.layers.Layer):
        def build(self, input_shape):
            _, h, w, c = input_shape
            self.embedding = self.add_weight(name="embedding", shape=(1, h, w, c),
                                             initializer="zeros")
            super().build(input_shape)

        def call(self, x):
            return x + self.embedding

    return PositionEmbedding


@functools.cache
def _self_attention_classes(tf_keras, tfmot):
    """`(SelfAttention, SelfAttentionQuantizeConfig)`: the tf_keras twin of a Keras 3
    MultiHeadAttention called as `mha(x, x)`, and its 8-bit QuantizeConfig.

    tfmot's QuantizeWrapper calls the wrapped layer with one input, so attention that
    takes query and value cannot be wrapped; self-attention takes one input here, and
    its inner tf_keras MultiHeadAttention holds the Keras 3 layer's weights, same order.
    """

    class SelfAttention(tf_keras.layers.Layer):
        # Identity hooks the QuantizeConfig replaces with fake-quantization: the int8
        # converter makes a projection integer only when its input and output have
        # ranges, and LayerNorm before attention and the attention matmuls stay float.
        HOOKS = ("input_activation", "query_activation", "key_activation",
                 "value_activation", "context_activation")

        def __init__(self, attention, **kwargs):
            super().__init__(**kwargs)
            if isinstance(attention, dict):
                attention = tf_keras.layers.MultiHeadAttention.from_config(attention)
            self.attention = attention
            for hook in self.HOOKS:
                setattr(self, hook, tf_keras.activations.linear)

        def build(self, input_shape):
            if not self.attention.built:
                tf_keras_compat.build_attention(self.attention, input_shape)
            super().build(input_shape)

        def call(self, x, training=None):
            # tf_keras' MultiHeadAttention.call(x, x), unmasked, with the hooks in between
            attention = self.attention
            x = self.input_activation(x)
            project = functools.partial(tf_keras_compat.attention_projection, attention)
            query = self.query_activation(project("query")(x))
            key = self.key_activation(project("key")(x))
            value = self.value_activation(project("value")(x))
            context, _ = tf_keras_compat.compute_attention(attention, query, key, value, training=training)
            return project("output")(self.context_activation(context))

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "attention": self.attention.get_config()}

    quantizers = tfmot.quantization.keras.quantizers

    def _activation_quantizer():
        return quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False,
                                                 symmetric=False, narrow_range=False)

    class SelfAttentionQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """The query/key/value/output kernels fake-quantized per tensor (as tfmot's Dense
        config does); the input, the projections' outputs and the layer's output through
        moving-average ranges."""

        _DENSES = tf_keras_compat.ATTENTION_PROJECTIONS

        def get_weights_and_quantizers(self, layer):
            return [(tf_keras_compat.attention_projection(layer.attention, dense).kernel,
                     quantizers.LastValueQuantizer(num_bits=8, symmetric=True,
                                                   narrow_range=False, per_axis=False))
                    for dense in self._DENSES]

        def set_quantize_weights(self, layer, quantize_weights):
            for dense, weight in zip(self._DENSES, quantize_weights):
                tf_keras_compat.attention_projection(layer.attention, dense).kernel = weight

        def get_activations_and_quantizers(self, layer):
            return [(getattr(layer, hook), _activation_quantizer()) for hook in layer.HOOKS]

        def set_quantize_activations(self, layer, quantize_activations):
            for hook, activation in zip(layer.HOOKS, quantize_activations):
                setattr(layer, hook, activation)

        def get_output_quantizers(self, layer):
            return [_activation_quantizer()]

        def get_config(self):
            return {}

    return SelfAttention, SelfAttentionQuantizeConfig


def _query_value(args, kwargs):
    """`(query, value, other arguments)` of a MultiHeadAttention call."""
    kwargs = dict(kwargs)
    args = list(args)
    query = args.pop(0) if args else kwargs.pop("query")
    value = args.pop(0) if args else kwargs.pop("value", None)
    others = args + [v for k, v in kwargs.items() if v is not None and v is not False
                     and k != "training"]
    return query, value, others


# Keras 3 config keys that have no tf_keras meaning, or that only matter at init time
# (the weights are copied afterwards).
_DROPPED_KEYS = {"dtype", "trainable", "seed"}


def _tf_keras_layer(layer, tf_keras, custom):
    """A tf_keras layer of the same class, config and name as Keras 3 `layer`."""
    name = type(layer).__name__
    if name in custom:
        return custom[name](name=layer.name)
    builtin = type(layer).__module__.split(".")[0] == "keras"
    if isinstance(layer, BroadcastSafeLayerNormalization):  # same math, config and weights
        name, builtin = "LayerNormalization", True
    if builtin_class(layer) is not type(layer):  # same forward and config, another train step
        name, builtin = builtin_class(layer).__name__, True
    cls = getattr(tf_keras.layers, name, None)
    if cls is None or not builtin:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no tf_keras twin, so it "
            "cannot be rebuilt for quantization-aware training. Supported: built-in "
            "Keras layers and keras_pf's PositionEmbedding and LayerNormalization."
        )
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {}
    for key, value in layer.get_config().items():
        if key in _DROPPED_KEYS or key.endswith(("_initializer", "_regularizer", "_constraint")):
            continue
        if key in accepted or key == "name":
            config[key] = value
    if getattr(layer, "activation", None) is gelu:  # same math under tf_keras' own name
        config["activation"] = "gelu"
    return cls(**config)


def to_tf_keras(model):
    """Rebuild the functional Keras 3 `model` in tf_keras, weights copied (float)."""
    _, tf_keras = import_tfmot()
    custom = {"PositionEmbedding": _position_embedding_class(tf_keras)}
    if not has_graph(model):
        raise ValueError("quantize_aware needs a functional Keras 3 model (e.g. any keras_pf model)")
    if len(model.inputs) != 1:
        raise ValueError("quantize_aware supports models with one image input")
    twins = {}

    def attend(layer):
        # self-attention (query is value, nothing else) gets a one-input twin that QAT can wrap
        def call(*args, **kwargs):
            query, value, others = _query_value(args, kwargs)
            if id(layer) not in twins:
                twin = _tf_keras_layer(layer, tf_keras, custom)
                if value is query and not others:
                    self_attention = _self_attention_classes(tf_keras, import_tfmot()[0])[0]
                    tf_keras_compat.rename(twin, "attention")
                    twin = self_attention(twin, name=layer.name)
                twins[id(layer)] = (layer, twin)
            twin = twins[id(layer)][1]
            if isinstance(twin, tf_keras.layers.MultiHeadAttention):
                return twin(*args, **kwargs)
            if value is not query or others:
                raise ValueError(f"Layer '{layer.name}' (MultiHeadAttention) is called both as "
                                 "self-attention and with a separate value; call it one way")
            return twin(query)

        return call

    def translate(layer):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return attend(layer)
        if is_functional(layer):
            # A nested functional model (a fine-tuned model's backbone): inlined, its
            # layers become layers of the flat tf_keras model.
            def inline(*args, **kwargs):
                return run_through_graph(layer, args[0], translate)

            return inline
        if id(layer) not in twins:
            twins[id(layer)] = (layer, _tf_keras_layer(layer, tf_keras, custom))
        return twins[id(layer)][1]

    input_name = tensor_producer(model.inputs[0]).name  # the InputLayer's name
    inputs = tf_keras.Input(shape=model.input_shape[1:], name=input_name)
    outputs = run_through_graph(model, [inputs], translate)
    twin_model = tf_keras.Model(inputs, outputs, name=model.name)
    for layer, twin in twins.values():
        weights = [np.asarray(w) for w in layer.weights]
        if len(weights) != len(twin.weights):
            raise ValueError(f"Layer '{layer.name}': {len(weights)} weights in Keras 3, "
                             f"{len(twin.weights)} in tf_keras")
        twin.set_weights(weights)
    return twin_model


def quantize_aware(model):
    """A trainable quantization-aware copy of the Keras 3 `model` (a tf_keras model).

    Convolutions, dense layers and everything else tfmot's default 8-bit scheme
    supports get fake-quantization (BatchNorm folded into its convolution); layers it
    has no configuration for train in float and are listed in the returned model's
    `float_layers` attribute (`{layer name: "ClassName: why"}`). Self-attention is
    quantized through `SelfAttention`'s QuantizeConfig; exporting with calibration
    images (`export_tflite(qat, path, "int8", calibration=...)`) gives the float layers
    int8 ranges too. Compile and `fit` it as any
    model (it is a tf_keras model: use `tf_keras` optimizers and losses, or strings),
    then `keras_pf.mobile.export.export_tflite(qat_model, path, precision="int8")`.
    """
    from keras_pf.mobile.rewrite import average_pools_as_convolutions

    tfmot, tf_keras = import_tfmot()
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    # as for post-training int8: XNNPACK has no int8 average pool, a fixed depthwise
    # convolution computes the same and runs in int8
    float_model = to_tf_keras(average_pools_as_convolutions(model))
    float_layers = {}
    self_attention, self_attention_config = _self_attention_classes(tf_keras, tfmot)

    def annotate(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        clone = layer.__class__.from_config(layer.get_config())
        # tfmot has no config of its own for BatchNormalization: annotated, it is
        # folded into the convolution before it by tfmot's layout transforms.
        folded = isinstance(layer, tf_keras.layers.BatchNormalization)
        if isinstance(layer, self_attention):
            return tfmot.quantization.keras.quantize_annotate_layer(
                clone, quantize_config=self_attention_config())
        if folded or (registry.supports(layer) and _activation_supported(layer)):
            return tfmot.quantization.keras.quantize_annotate_layer(clone)
        float_layers[layer.name] = f"{type(layer).__name__}: {_float_reason(layer)}"
        return clone

    annotated = tf_keras.models.clone_model(float_model, clone_function=annotate)
    annotated.set_weights(float_model.get_weights())
    with tfmot.quantization.keras.quantize_scope(
            {"PositionEmbedding": _position_embedding_class(tf_keras),
             "SelfAttention": self_attention,
             "SelfAttentionQuantizeConfig": self_attention_config}):
        qat_model = tfmot.quantization.keras.quantize_apply(annotated)
    qat_model.float_layers = float_layers
    return qat_model


_FLOAT_REASONS = {
    "MultiHeadAttention": "called with a separate value (not self-attention): tfmot's "
                          "QuantizeWrapper passes one input, so it trains in float; export "
                          "with calibration images to make its projections int8 in the file",
    "LayerNormalization": "tfmot's 8-bit scheme has no LayerNorm config; TFLite has no int8 "
                          "LayerNorm kernel (it is lowered to MEAN/SQUARED_DIFFERENCE/RSQRT)",
    "PositionEmbedding": "an added weight, not a kernel: kept float in training (an ADD that "
                         "calibration at export can quantize)",
}


def _float_reason(layer):
    return _FLOAT_REASONS.get(type(layer).__name__,
                              f"tfmot's default 8-bit scheme has no config for {type(layer).__name__}")


def _activation_supported(layer):
    # tfmot's Activation config raises at apply time on activations it does not list
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    if type(layer).__name__ != "Activation":
        return True
    return name in ("relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh")
