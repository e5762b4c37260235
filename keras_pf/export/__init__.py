"""Export to every runtime a model is deployed to, one module per format:

| format | file | module | runs in (check, benchmark) |
|---|---|---|---|
| `litert` | `.tflite` | `keras_pf.mobile.export` (via `litert`) | LiteRT, XNNPACK delegate |
| `onnx` | `.onnx` | `onnx` (Keras' exporter, tf2onnx) | ONNX Runtime |
| `openvino` | `.xml` + `.bin` | `openvino` (OpenVINO's converter) | OpenVINO CPU, float32 |
| `saved_model` | a folder | `saved_model` (Keras' exporter) | its `serving_default` signature |

Every format takes the same preprocessing choice (`include_preprocessing=True`: the file
takes RGB pixels 0..255, the ImageNet normalization inside), writes atomically, writes the
class names beside the file as `<name>.labels.txt`, calls the model once first (Keras'
exporters refuse a model never called), and has a `check` that runs the file in its own
runtime and compares it with Keras. ONNX and OpenVINO need the extras
`keras_pf[onnx]` / `keras_pf[openvino]`; without them export raises `MissingRuntime`
(a ValueError) naming the extra. The formats other than LiteRT have a variable batch.
"""

import importlib

from keras_pf.export.common import TOLERANCE, MissingRuntime, format_reports  # noqa: F401

FORMATS = ("litert", "onnx", "openvino", "saved_model")
# format -> the output's suffix ("" : a folder)
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx", "openvino": ".xml", "saved_model": ""}


def _module(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; received {fmt!r}")
    return importlib.import_module(f"keras_pf.export.{fmt}")


def export_model(model, path, format="litert", include_preprocessing=False,
                 input_dtype="float32", labels=None, **kwargs):
    """Write `model` in `format` to `path`; return `path`.

    `path` ends in the format's suffix (`SUFFIXES`; a SavedModel is a folder).
    `include_preprocessing`: the file takes RGB pixels 0..255 (`input_dtype` "float32"
    or "uint8") and normalizes inside. `labels`: class names, written beside the file
    (default: ImageNet's for a 1000-way classifier). Other keyword arguments go to the
    format's function: `keras_pf.mobile.export.export_tflite` (precision, calibration,
    metadata, ...) for litert; `batch_size` (default None, variable) for the others,
    `opset` for onnx.
    """
    module = _module(format)
    return getattr(module, f"export_{format}")(
        model, path, include_preprocessing=include_preprocessing, input_dtype=input_dtype,
        labels=labels, **kwargs)


def check_model(model, path, images, format="litert", include_preprocessing=False):
    """Run the exported file on `images` (as it takes them) in its own runtime and
    compare with `model`: a dict with `max_abs_diff`, `relative_diff` (to the largest
    Keras output), `matches` (relative_diff <= TOLERANCE), `top1_agreement`, ..."""
    return getattr(_module(format), f"check_{format}")(model, path, images,
                                                       include_preprocessing)


def run_model(path, images, format):
    """The exported file's outputs on `images` in its own runtime."""
    return getattr(_module(format), f"run_{format if format != 'litert' else 'tflite'}")(
        path, images)


def labels_path(path, format):
    return _module(format).labels_path(path)


def require(format):
    """Raise `MissingRuntime` (naming the pip extra) unless `format` can be exported."""
    from keras_pf.export import common

    _module(format)
    common.require(format)


def check_output(path, format):
    """Raise ValueError unless `path` is a valid output of `format` (suffix, folder)."""
    from keras_pf.export import common

    if format == "saved_model":
        return _module(format).check_output(path)
    if format == "litert":
        from keras_pf.mobile.export import check_export_arguments

        check_export_arguments(path, "float32")
        return path
    return common.check_file_output(path, SUFFIXES[format], common.RUNTIMES[format][2])
