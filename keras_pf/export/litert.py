"""LiteRT (TFLite): the mobile export of `keras_pf.mobile.export`, under the interface
the other formats of `keras_pf.export` share."""

from keras_pf.mobile.check import check_tflite, run_tflite  # noqa: F401
from keras_pf.mobile.export import export_tflite  # noqa: F401
from keras_pf.mobile.labels import labels_path  # noqa: F401

SUFFIX = ".tflite"


def export_litert(model, path, include_preprocessing=False, input_dtype="float32", labels=None,
                  **kwargs):
    """`keras_pf.mobile.export.export_tflite` (precision, calibration, metadata, ...:
    its keyword arguments)."""
    return export_tflite(model, path, include_preprocessing=include_preprocessing,
                         input_dtype=input_dtype, labels=labels, **kwargs)


def check_litert(model, path, images, include_preprocessing=False):
    from keras_pf.export import common

    report = check_tflite(model, path, images, include_preprocessing)
    outputs = run_tflite(path, images)
    return {**report, **common.compare(model, path, outputs, images, "litert",
                                       "LiteRT (XNNPACK)", include_preprocessing)}
