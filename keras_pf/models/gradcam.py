"""Grad-CAM (Selvaraju et al., 2017): where in the image a keras_pf model looks for a class.

`gradcam(model, image)` weights the last stage's feature map by the spatially
averaged gradient of the class logit, keeps the positive part and scales it to
[0, 1]. It differentiates with `tf.GradientTape`, hence this TensorFlow-specific
module. `keras-pf gradcam MODEL IMAGE -o out.png` overlays the map on the image.
"""

import numpy as np


def _is_softmax_dense(layer):
    import keras

    return isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax


def _logits(layer, x):
    """The pre-softmax output of a softmax Dense layer: softmax saturates gradients."""
    import keras

    x = keras.ops.matmul(x, layer.kernel)
    return x + layer.bias if layer.use_bias else x


def _nested_backbone(model):
    """The keras_pf backbone nested in `model` (e.g. a `keras_pf.training.finetune` model)."""
    import keras

    from keras_pf.models.transfer import feature_layers

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                feature_layers(layer)
                return layer
            except ValueError:
                continue
    return None


def _scorer(model, layer_name):
    """`(score(image) -> (feature map, class logits), layer_name)`.

    Flat keras_pf classifiers (`include_top=True`) are differentiated as one model. A
    model holding a keras_pf backbone as a nested layer (`keras_pf.training.finetune`) runs the
    backbone to (feature map, output), then its head layers in order up to "logits".
    """
    import keras

    from keras_pf.models.transfer import feature_layers

    names = {layer.name for layer in model.layers}
    backbone = None if layer_name in names else _nested_backbone(model)
    if backbone is None:
        layer_name = layer_name or feature_layers(model)[-1][0]
        features = model.get_layer(layer_name).output
        last = model.layers[-1]
        if "logits" in names:
            outputs, last = model.get_layer("logits").output, None
        elif _is_softmax_dense(last):
            outputs = last.input
        else:
            outputs, last = model.output, None
        inner, head = keras.Model(model.input, [features, outputs]), [last] if last else []
    else:
        layer_name = layer_name or feature_layers(backbone)[-1][0]
        inner = keras.Model(backbone.input, [backbone.get_layer(layer_name).output, backbone.output])
        after = model.layers[model.layers.index(backbone) + 1:]
        stop = [layer.name for layer in after].index("logits") + 1 if "logits" in names else len(after)
        head = after[:stop]

    def score(image):
        features, x = inner(image, training=False)
        for layer in head:
            x = _logits(layer, x) if _is_softmax_dense(layer) else layer(x, training=False)
        return features, x

    return score, layer_name


def gradcam(model, image, class_index=None, layer_name=None):
    """The Grad-CAM heat map of `model` for one preprocessed image.

    Args:
        model: a keras_pf classifier (`include_top=True`), or a model with a keras_pf
            backbone as a nested layer followed by a chain of head layers (as
            `keras_pf.training.finetune` builds it).
        image: `(height, width, 3)` or `(1, height, width, 3)` array, already
            preprocessed (`keras_pf.preprocess_input`) at the model's input size.
        class_index: the class to explain; default: the top predicted class.
        layer_name: the 4D feature map to weight; default: the deepest entry of
            `keras_pf.feature_layers(model)` (`conv5_block3_out` for PF-ResNet50).

    Returns:
        `(heatmap, class_index)`: float32 `(h, w)` map in [0, 1] at the feature map's
        resolution (all zeros if no location raises the class score).
    """
    import tensorflow as tf

    image = np.asarray(image, np.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3:
        raise ValueError(f"gradcam explains one RGB image; received shape {image.shape}.")
    score, layer_name = _scorer(model, layer_name)
    with tf.GradientTape() as tape:
        features, scores = score(tf.constant(image))
        if class_index is None:
            class_index = int(tf.argmax(scores[0]))
        if not 0 <= class_index < scores.shape[-1]:
            raise ValueError(f"class_index {class_index} is out of range: the model has "
                             f"{scores.shape[-1]} classes.")
        score = scores[:, class_index]
    if len(features.shape) != 4:
        raise ValueError(f"Layer {layer_name!r} is not a 4D feature map (shape {features.shape}).")
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    heatmap = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0].numpy()
    peak = heatmap.max()
    heatmap = heatmap / peak if peak > 0 else np.zeros_like(heatmap)
    return heatmap.astype(np.float32), class_index


def overlay(image, heatmap, alpha=0.45, colormap="jet"):
    """uint8 RGB: `heatmap` resized (bilinear) to `image` and blended over it."""
    import tensorflow as tf

    import matplotlib

    image = np.asarray(image, np.float32)
    resized = tf.image.resize(heatmap[..., None], image.shape[:2], method="bilinear")[..., 0].numpy()
    colours = matplotlib.colormaps[colormap](np.clip(resized, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)
