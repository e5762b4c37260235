"""Quantization-aware training (QAT) for keras_pf models, through tfmot.

tfmot 0.8 only quantizes tf_keras (Keras 2) models, so `quantize_aware` rebuilds the
Keras 3 model layer by layer in tf_keras by walking its functional graph (same layer
classes, configs and names; weights copied by name), annotates every layer tfmot's
default 8-bit scheme knows (convolutions, dense, BatchNorm folded into its conv, ReLU,
pools, adds, ...) and leaves the rest in float: LayerNormalization, MultiHeadAttention,
the position embedding, GELU. Walking the graph instead of re-running the builders keeps
one definition of each network and works for any functional Keras 3 model.

tfmot is imported here only, lazily: importing it sets TF_USE_LEGACY_KERAS=1 for the
process, which this module undoes, so `import keras_pf` never changes the user's Keras.
"""

import functools
import inspect
import os

import numpy as np

import keras

from keras_pf.layers import BroadcastSafeLayerNormalization

_tfmot = None


def _import_tfmot():
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
    """The tf_keras twin of `keras_pf.layers.PositionEmbedding` (float under QAT); one
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
    return cls(**config)


def to_tf_keras(model):
    """Rebuild the functional Keras 3 `model` in tf_keras, weights copied (float)."""
    _, tf_keras = _import_tfmot()
    custom = {"PositionEmbedding": _position_embedding_class(tf_keras)}
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError("quantize_aware needs a functional Keras 3 model (e.g. any keras_pf model)")
    if len(model.inputs) != 1:
        raise ValueError("quantize_aware supports models with one image input")
    twins = {}

    def translate(layer):
        if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
            # A nested functional model (a fine-tuned model's backbone): inlined, its
            # layers become layers of the flat tf_keras model.
            def inline(*args, **kwargs):
                return layer._run_through_graph(args[0], operation_fn=translate)

            return inline
        if id(layer) not in twins:
            twins[id(layer)] = (layer, _tf_keras_layer(layer, tf_keras, custom))
        return twins[id(layer)][1]

    input_name = model.inputs[0]._keras_history.operation.name  # the InputLayer's name
    inputs = tf_keras.Input(shape=model.input_shape[1:], name=input_name)
    outputs = model._run_through_graph([inputs], operation_fn=translate)
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
    `float_layers` attribute (`{layer name: "ClassName: why"}`). Exporting with
    calibration images (`export_tflite(qat, path, "int8", calibration=...)`) gives those
    layers int8 ranges too, so attention's projections run int8 in the file. Compile and `fit` it as any
    model (it is a tf_keras model: use `tf_keras` optimizers and losses, or strings),
    then `keras_pf.export.export_tflite(qat_model, path, precision="int8")`.
    """
    tfmot, tf_keras = _import_tfmot()
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    float_model = to_tf_keras(model)
    float_layers = {}

    def annotate(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        clone = layer.__class__.from_config(layer.get_config())
        # tfmot has no config of its own for BatchNormalization: annotated, it is
        # folded into the convolution before it by tfmot's layout transforms.
        folded = isinstance(layer, tf_keras.layers.BatchNormalization)
        if folded or (registry.supports(layer) and _activation_supported(layer)):
            return tfmot.quantization.keras.quantize_annotate_layer(clone)
        float_layers[layer.name] = f"{type(layer).__name__}: {_float_reason(layer)}"
        return clone

    annotated = tf_keras.models.clone_model(float_model, clone_function=annotate)
    annotated.set_weights(float_model.get_weights())
    with tfmot.quantization.keras.quantize_scope(
            {"PositionEmbedding": _position_embedding_class(tf_keras)}):
        qat_model = tfmot.quantization.keras.quantize_apply(annotated)
    qat_model.float_layers = float_layers
    return qat_model


_FLOAT_REASONS = {
    "MultiHeadAttention": "no QuantizeConfig: tfmot's QuantizeWrapper passes one input and "
                          "attention takes query and value, so it trains in float; export "
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
