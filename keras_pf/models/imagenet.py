"""ImageNet preprocessing and decoding, shared by every keras_pf model."""

import json
import os

import numpy as np

from keras import ops

# The original training's normalization (torchvision / timm defaults).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_CLASS_INDEX_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "imagenet_class_index.json")
_class_index = None


def preprocess_input(x, data_format=None):
    """RGB pixels in [0, 255] -> scaled to [0, 1], then per-channel ImageNet mean/std.

    Works on numpy arrays and tensors, channels last (`data_format` is accepted for
    `keras.applications` compatibility and must be None or "channels_last"). Returns
    float32.
    """
    if data_format not in (None, "channels_last"):
        raise ValueError(f"keras_pf models are channels_last; received data_format={data_format}")
    mean = np.array(MEAN, np.float32) * 255.0
    std = np.array(STD, np.float32) * 255.0
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32) - mean) / std
    return (ops.cast(x, "float32") - mean) / std


def class_index():
    """`{index: (wordnet_id, name)}` for the 1000 classes, read from the shipped file."""
    global _class_index
    if _class_index is None:
        with open(_CLASS_INDEX_PATH) as f:
            _class_index = {int(k): tuple(v) for k, v in json.load(f).items()}
    return _class_index


def decode_predictions(preds, top=5):
    """`[[(wordnet_id, name, score), ...], ...]`: the `top` classes of each prediction,
    as `keras.applications.imagenet_utils.decode_predictions`, with no download."""
    preds = np.asarray(ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array of "
            f"shape (samples, 1000)). Received array with shape: {preds.shape}"
        )
    index = class_index()
    results = []
    for pred in preds:
        top_indices = pred.argsort()[-top:][::-1]
        results.append([(*index[i], float(pred[i])) for i in top_indices])
    return results
