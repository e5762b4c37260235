"""Grad-CAM (Selvaraju et al., 2017): where in the image a keras_pf model looks for a class.

`gradcam(model, image)` weights the last stage's feature map by the spatially
averaged gradient of the class logit, keeps the positive part and scales it to
[0, 1]. It differentiates with `tf.GradientTape`, hence this TensorFlow-specific
module. `keras-pf gradcam MODEL IMAGE -o out.png` overlays the map on the image.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_pf.transfer import feature_layers


def _class_score_model(model, layer_name):
    """A model from the input to (feature map, class scores). The scores are the
    logits when the model ends in a softmax "predictions" Dense (keras.applications
    style) or has a "logits" layer (keras_pf.finetune): softmax saturates gradients."""
    features = model.get_layer(layer_name).output
    names = {layer.name for layer in model.layers}
    if "logits" in names:
        return keras.Model(model.input, [features, model.get_layer("logits").output]), None
    predictions = model.get_layer("predictions") if "predictions" in names else None
    if isinstance(predictions, keras.layers.Dense):
        return keras.Model(model.input, [features, predictions.input]), predictions
    return keras.Model(model.input, [features, model.output]), None


def gradcam(model, image, class_index=None, layer_name=None):
    """The Grad-CAM heat map of `model` for one preprocessed image.

    Args:
        model: a keras_pf classifier (`include_top=True`, or a `keras_pf.finetune`
            model whose backbone layers are in the model itself).
        image: `(height, width, 3)` or `(1, height, width, 3)` array, already
            preprocessed (`keras_pf.preprocess_input`) at the model's input size.
        class_index: the class to explain; default: the top predicted class.
        layer_name: the 4D feature map to weight; default: the deepest entry of
            `keras_pf.feature_layers(model)` (`conv5_block3_out` for PF-ResNet50).

    Returns:
        `(heatmap, class_index)`: float32 `(h, w)` map in [0, 1] at the feature map's
        resolution (all zeros if no location raises the class score).
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3:
        raise ValueError(f"gradcam explains one RGB image; received shape {image.shape}.")
    if layer_name is None:
        layer_name = feature_layers(model)[-1][0]
    score_model, dense = _class_score_model(model, layer_name)
    with tf.GradientTape() as tape:
        features, scores = score_model(image, training=False)
        if dense is not None:  # logits of the softmax Dense, from its input
            scores = tf.matmul(scores, dense.kernel) + (dense.bias if dense.use_bias else 0.0)
        if class_index is None:
            class_index = int(tf.argmax(scores[0]))
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
    import matplotlib

    image = np.asarray(image, np.float32)
    resized = tf.image.resize(heatmap[..., None], image.shape[:2], method="bilinear")[..., 0].numpy()
    colours = matplotlib.colormaps[colormap](np.clip(resized, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def add_gradcam_arguments(parser):
    from keras_pf import MODELS

    parser.add_argument("model", help=f"model name ({', '.join(MODELS)}) or a saved .keras classifier")
    parser.add_argument("image", help="image file (jpg, png, ...)")
    parser.add_argument("-o", "--output", required=True, help="output PNG")
    parser.add_argument("--weights", default="imagenet",
                        help="weights tag or path for a named model, or 'none' (default imagenet)")
    parser.add_argument("--class-index", type=int, default=None, help="class to explain (default: top-1)")
    parser.add_argument("--layer", default=None, help="feature layer (default: the last stage's output)")
    parser.add_argument("--crop-ratio", type=float, default=0.875, help="center crop as in evaluation")


def _load_model(name, weights):
    from keras_pf import MODELS

    if name in MODELS:
        return MODELS[name](weights=None if str(weights).lower() == "none" else weights)
    if name.endswith(".keras") and os.path.exists(name):
        return keras.saving.load_model(name)
    raise ValueError(f"Unknown model {name!r}: use one of {', '.join(MODELS)} or a .keras file.")


def run_gradcam(args):
    from PIL import Image

    from keras_pf.data import eval_transform
    from keras_pf.imagenet import preprocess_input

    if not args.output.lower().endswith(".png"):
        raise ValueError(f"--output must be a .png file; received {args.output!r}.")
    model = _load_model(args.model, args.weights)
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        raise ValueError("gradcam needs a model with a fixed input size.")
    try:
        with Image.open(args.image) as file:
            pixels = np.asarray(file.convert("RGB"))
    except OSError as error:
        raise ValueError(f"Cannot read image {args.image!r}: {error}") from error
    crop = eval_transform(pixels, (height, width), args.crop_ratio).numpy()
    heatmap, class_index = gradcam(model, preprocess_input(crop), args.class_index, args.layer)
    label = str(class_index)
    if model.output_shape[-1] == 1000:
        from keras_pf.imagenet import class_index as imagenet_classes

        label = f"{class_index} ({imagenet_classes()[class_index][1]})"
    result = Image.fromarray(overlay(crop, heatmap))
    directory = os.path.dirname(os.path.abspath(args.output))
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(args.output)}")
    try:
        result.save(tmp, format="PNG")
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"class {label}: Grad-CAM of layer {args.layer or feature_layers(model)[-1][0]} -> {args.output}")
