"""TensorFlow SavedModel export (for TF Serving, TF.js converters, `tf.saved_model.load`),
through Keras' own exporter (`model.export(format="tf_saved_model")`), checked through
the folder's `serving_default` signature.

The folder is written beside its final name and renamed into place when complete (a
previous SavedModel there is replaced; any other folder or file is refused).
"""

import os

from keras_pf.export import common
from keras_pf.files import atomic_folder

# An output that looks like a file name is most likely a mistake for another format.
FILE_SUFFIXES = (".onnx", ".xml", ".bin", ".tflite", ".keras", ".h5", ".pb", ".zip", ".json",
                 ".txt")


def check_output(path):
    """`path` as a string; ValueError unless it names a new folder, or a SavedModel to
    replace, in a writable place."""
    from keras_pf.mobile.export import check_output_folder

    path = os.fspath(path).rstrip("/" + os.sep)
    if not path or path.lower().endswith(FILE_SUFFIXES):
        raise ValueError(f"A SavedModel is a folder: name it without a file suffix, e.g. "
                         f"-o model_savedmodel; received {path!r}.")
    if os.path.isfile(path):
        raise ValueError(f"Output {path!r} is a file; a SavedModel is a folder: choose "
                         "another -o/--output.")
    if os.path.isdir(path) and os.listdir(path) and not is_saved_model(path):
        raise ValueError(f"Output folder {path!r} exists and is not a SavedModel; it is "
                         "left alone: choose another -o/--output or remove it.")
    check_output_folder(path)
    return path


def is_saved_model(path):
    return os.path.isfile(os.path.join(os.fspath(path), "saved_model.pb"))


def export_saved_model(model, path, include_preprocessing=False, input_dtype="float32",
                       labels=None, batch_size=None):
    """Write `model` as a SavedModel folder `path` (atomically), with the signature
    `serving_default` (input `pixels` or `image`, output `output_0`), and its class
    names as `<path>.labels.txt` beside the folder; return `path`. Preprocessing and
    input as in `keras_pf.export.onnx.export_onnx`."""
    common.require("saved_model")
    path = check_output(path)
    labels = common.labels_for(model, labels)
    common.remove_stale_partials(path)
    wrapped = common.prepared_model(model, include_preprocessing, input_dtype, batch_size)
    with atomic_folder(path) as tmp:
        wrapped.export(tmp, format="tf_saved_model", verbose=False,
                       input_signature=common.signature(wrapped))
    common.write_labels(labels_path(path), labels)
    return path


def labels_path(path):
    return common.labels_path(path)


def serving_function(path):
    """`(loaded, function, input name)`: the loaded folder (keep it alive while calling)
    and its `serving_default` signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    function = loaded.signatures["serving_default"]
    return loaded, function, next(iter(function.structured_input_signature[1]))


def run_saved_model(path, images):
    """The folder's `serving_default` outputs on `images` (one batch)."""
    import numpy as np
    import tensorflow as tf

    _loaded, function, name = serving_function(path)
    dtype = function.structured_input_signature[1][name].dtype
    outputs = function(**{name: tf.constant(np.asarray(images).astype(dtype.as_numpy_dtype))})
    return np.asarray(next(iter(outputs.values())))


def check_saved_model(model, path, images, include_preprocessing=False):
    """How closely the folder's serving signature matches `model` on `images`."""
    return common.compare(model, path, run_saved_model(path, images), images, "saved_model",
                          "TF serving signature", include_preprocessing)
