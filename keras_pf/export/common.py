"""What the export formats of `keras_pf.export` share: the runtime check with its pip
extra, the output-path checks, the model as the file computes it (preprocessing inside
or not, called once for Keras' exporter), labels beside the file, atomic folders, and
the comparison of a file's outputs with Keras'.

TensorFlow, Keras and the runtimes are imported inside the functions, so that `keras-pf
export --help` needs none of them.
"""

import contextlib
import importlib.util
import os
import shutil

import numpy as np

# format -> (pip extra, importable modules it needs, its name in messages)
RUNTIMES = {
    "onnx": ("onnx", ("tf2onnx", "onnx", "onnxruntime"), "ONNX"),
    "openvino": ("openvino", ("openvino",), "OpenVINO"),
    "saved_model": (None, ("tensorflow",), "SavedModel"),
    "litert": (None, ("tensorflow", "ai_edge_litert"), "LiteRT"),
}
# A float32 file matches Keras when its largest difference is at most this fraction of
# the largest Keras output (logits of any scale; probabilities are at most 1).
TOLERANCE = 1e-4


class MissingRuntime(ValueError):
    """The format's converter or runtime is not installed (the message names the extra)."""


def require(fmt):
    """Raise `MissingRuntime` naming the pip extra unless `fmt`'s modules are installed."""
    extra, modules, title = RUNTIMES[fmt]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        fix = f"pip install 'keras_pf[{extra}]'" if extra else "pip install keras_pf"
        raise MissingRuntime(f"{title} export needs {', '.join(missing)}, which is not "
                             f"installed: {fix}")


# --------------------------------------------------------------------------- outputs


def check_file_output(path, suffix, title):
    """`path` as a string; ValueError unless it ends with `suffix`, is not a folder and
    its folder can be written."""
    from keras_pf.mobile.export import check_output_folder

    path = os.fspath(path)
    if not path.endswith(suffix) or os.path.basename(path) == suffix:
        raise ValueError(f"The {title} file must end with '{suffix}'; received {path!r} "
                         f"(e.g. -o model{suffix}).")
    if os.path.isdir(path):
        raise ValueError(f"Output {path!r} is a folder; name the {suffix} file to write.")
    check_output_folder(path)
    return path


def labels_path(path, suffix=""):
    """`<path without suffix>.labels.txt`: the class names beside the file (or folder)."""
    path = os.fspath(path).rstrip("/" + os.sep)
    return (path[: -len(suffix)] if suffix and path.endswith(suffix) else path) + ".labels.txt"


def labels_for(model, labels):
    """The checked class names for `model`'s output (ImageNet's for 1000 classes)."""
    from keras_pf.mobile.labels import model_labels as _labels

    return _labels(model, labels)


def write_labels(path, labels):
    from keras_pf.files import write_atomic

    if labels is not None:
        write_atomic(path, "\n".join(labels) + "\n")


def remove_stale_partials(path):
    """Partial `.tmp_*<name>` files or folders that a killed export left beside `path`."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path).rstrip("/" + os.sep)))
    if os.path.isdir(directory):
        for entry in os.listdir(directory):
            if entry.startswith(".tmp_") and entry.endswith(base):
                full = os.path.join(directory, entry)
                with contextlib.suppress(OSError):
                    shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)


def size_bytes(path):
    """Bytes of an exported file, an OpenVINO `.xml` with its `.bin`, or a folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, f))
                   for root, _, files in os.walk(path) for f in files)
    total = os.path.getsize(path)
    if path.endswith(".xml") and os.path.exists(path[:-4] + ".bin"):
        total += os.path.getsize(path[:-4] + ".bin")
    return total


# ----------------------------------------------------------------------------- model


def prepared_model(model, include_preprocessing=False, input_dtype="float32", batch_size=None):
    """`model` as the exported file computes it: one image input of fixed size (a
    variable batch by default), optionally the ImageNet normalization in front
    (`include_preprocessing`: the file takes RGB pixels 0..255), called once on zeros:
    Keras' exporters refuse a model never called ("The model provided has never
    called"), which a freshly built functional model is.

    The normalization is a `Rescaling` with per-channel constants (x / (255 std) -
    mean / std), built inside the traced function. (Keras' `Normalization` layer, which
    the LiteRT export uses, keeps its mean and variance as captured tensors, and
    tf2onnx turns those into extra graph inputs that ONNX Runtime then asks for.)
    """
    import keras

    from keras_pf.mobile.export import mobile_model

    mobile_model(model, False, "float32", batch_size)  # its checks of the input, one line each
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"input_dtype must be 'float32' or 'uint8'; received {input_dtype!r}")
    if input_dtype == "uint8" and not include_preprocessing:
        raise ValueError("input_dtype='uint8' means raw pixels: use it with include_preprocessing=True")
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), batch_size=batch_size,
                         dtype=input_dtype, name="pixels" if include_preprocessing else "image")
    x = inputs
    if include_preprocessing:
        from keras_pf.models.imagenet import MEAN, STD

        if input_dtype == "uint8":
            x = keras.ops.cast(x, "float32")
        x = keras.layers.Rescaling(scale=[1.0 / (255.0 * s) for s in STD],
                                   offset=[-m / s for m, s in zip(MEAN, STD)], name="preprocess")(x)
    wrapped = keras.Model(inputs, model(x, training=False), name=model.name + "_export")
    wrapped(np.zeros((1, *wrapped.input_shape[1:]), dtype=input_dtype), training=False)
    return wrapped


def signature(wrapped):
    """The input signature for Keras' exporters: the wrapped model's own shape and name
    (inferred, Keras would make the batch variable even for `batch_size=1`)."""
    import tensorflow as tf

    inp = wrapped.inputs[0]
    return [tf.TensorSpec(tuple(wrapped.input_shape), inp.dtype, name=inp.name)]


def output_name(model):
    """"probabilities" for a softmax head, else "logits" (the file's output name)."""
    from keras_pf.mobile.export import outputs_probabilities

    return "probabilities" if outputs_probabilities(model) else "logits"


def first_line(error):
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


# ----------------------------------------------------------------------------- check


def keras_reference(model, images, include_preprocessing=False):
    """Keras' float32 outputs for `images` as the exported file takes them."""
    x = np.asarray(images).astype("float32")
    if include_preprocessing:
        from keras_pf.models.imagenet import preprocess_input

        x = preprocess_input(x)
    return np.asarray(model(x, training=False), dtype="float32")


def compare(model, path, outputs, images, fmt, runtime, include_preprocessing=False):
    """The check report of a file whose outputs on `images` are `outputs`."""
    reference = keras_reference(model, images, include_preprocessing)
    outputs = np.asarray(outputs, dtype="float32").reshape(reference.shape)
    diff = np.abs(outputs - reference)
    scale = float(np.abs(reference).max()) or 1.0
    report = {
        "path": os.fspath(path), "format": fmt, "runtime": runtime,
        "size_bytes": size_bytes(path), "images": len(images),
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "relative_diff": float(diff.max()) / scale,
    }
    report["matches"] = report["relative_diff"] <= TOLERANCE
    if reference.ndim == 2:
        report["top1_agreement"] = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
    return report


def format_reports(reports):
    """A Markdown table of `check` reports (one row per file)."""
    rows = ["| file | runtime | size (MB) | max abs diff | relative to the output scale "
            "| top-1 agreement |", "|---|---|---|---|---|---|"]
    for r in reports:
        agreement = f"{100 * r['top1_agreement']:.1f}%" if "top1_agreement" in r else "-"
        rows.append(f"| {os.path.basename(r['path'].rstrip('/'))} | {r['runtime']} | "
                    f"{r['size_bytes'] / 1e6:.2f} | {r['max_abs_diff']:.2e} | "
                    f"{r['relative_diff']:.2e} | {agreement} |")
    return "\n".join(rows)
