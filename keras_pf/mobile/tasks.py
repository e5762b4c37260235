"""One TFLite export for every kind of model `keras-pf export` takes: an image
classifier (`keras_pf.mobile.export.export_tflite`), a segmenter (a model with
`(batch, H, W, classes)` outputs, e.g. keras-hub's `DeepLabV3ImageSegmenter`:
`keras_pf.hub.mobile.export_segmenter`) or a keras-hub `RetinaNetObjectDetector`
(`keras_pf.hub.mobile.export_detector`), each with its own check against Keras.
The last two need keras-hub (`keras_pf[hub]`)."""

import os

import numpy as np

KINDS = ("classifier", "segmenter", "detector")
# images a --check without --calibration images compares on
RANDOM_CHECK_IMAGES = 16


def model_kind(model):
    """"detector" (RetinaNet's two head outputs), "segmenter" (one 4-D output) or
    "classifier"."""
    outputs = getattr(model, "output", None)
    if isinstance(outputs, dict) and set(outputs) == {"bbox_regression", "cls_logits"}:
        return "detector"
    if isinstance(model.output_shape, tuple) and len(model.output_shape) == 4:
        return "segmenter"
    return "classifier"


def check_kind_arguments(kind, name, include_preprocessing=True, raw_heads=False, tflite=True):
    """Raise ValueError, before any work, for options the kind cannot honour; and, for
    the keras-hub kinds' TFLite export (`tflite`), when keras-hub is missing (naming the
    extra)."""
    if raw_heads and kind != "detector":
        raise ValueError(f"--raw-heads is for detectors (RetinaNetObjectDetector); {name} is not one")
    if kind == "classifier" or not tflite:
        return
    if not include_preprocessing:
        raise ValueError(f"{name} is a {kind}: its file normalizes inside the graph (as "
                         "MediaPipe needs, which cannot normalize per channel); drop "
                         "--no-include-preprocessing")
    try:
        import keras_pf.hub.mobile  # noqa: F401
    except ImportError as error:  # keras_pf.hub names the extra in one line
        raise ValueError(str(error)) from None


def export_file(model, path, kind="classifier", precision="float32", calibration=None,
                labels=None, num_calibration=100, input_dtype="float32", float_fallback=True,
                metadata=True, include_preprocessing=True, postprocess=True):
    """Write `model` of `kind` as a `.tflite` file at `path`; return `path`.
    `postprocess`: detectors only (decoding and NMS in the file, else the raw heads)."""
    if kind == "detector":
        from keras_pf.hub.mobile import export_detector

        return export_detector(model, path, precision, calibration=calibration, labels=labels,
                               num_calibration=num_calibration, input_dtype=input_dtype,
                               float_fallback=float_fallback, postprocess=postprocess)
    if kind == "segmenter":
        from keras_pf.hub.mobile import export_segmenter

        return export_segmenter(model, path, precision, calibration=calibration, labels=labels,
                                num_calibration=num_calibration, input_dtype=input_dtype,
                                float_fallback=float_fallback, metadata=metadata)
    from keras_pf.mobile.export import export_tflite

    return export_tflite(model, path, precision, calibration=calibration,
                         include_preprocessing=include_preprocessing,
                         num_calibration=num_calibration, input_dtype=input_dtype, labels=labels,
                         metadata=metadata, float_fallback=float_fallback)


def check_file(model, path, images, kind="classifier", include_preprocessing=True,
               postprocess=True):
    """The file at `path` against `model` on `images` (as the file takes them): a
    `keras_pf.mobile.check.check_tflite`-style report."""
    if kind == "detector":
        from keras_pf.hub.mobile import check_detector

        return check_detector(model, path, images, postprocess)
    from keras_pf.mobile.check import check_tflite

    return check_tflite(model, path, images, include_preprocessing)


def check_with_reference(model, path, images, kind="classifier", precision="float32",
                         include_preprocessing=True, input_dtype="float32", labels=None,
                         postprocess=True):
    """The reports `keras-pf export --check` prints: the file's, and for a precision
    other than float32 first a float32 file's, exported for reference in a temporary
    folder."""
    from keras_pf.mobile.converter import temp_dir

    reports = [check_file(model, path, images, kind, include_preprocessing, postprocess)]
    if precision != "float32":
        with temp_dir() as tmp:
            ref = export_file(model, os.path.join(tmp, "float32.tflite"), kind,
                              input_dtype=input_dtype, labels=labels, metadata=False,
                              include_preprocessing=include_preprocessing, postprocess=postprocess)
            reports.insert(0, check_file(model, ref, images, kind, include_preprocessing,
                                         postprocess))
    return reports


def random_check_images(image_size, include_preprocessing=True, count=RANDOM_CHECK_IMAGES):
    """`count` uniform random RGB images of `image_size` (height, width), as the file
    takes them: pixels in [0, 255], or `preprocess_input`'s output."""
    pixels = np.random.default_rng(0).uniform(0, 255, (count, *image_size, 3)).astype("float32")
    if include_preprocessing:
        return pixels
    from keras_pf.models.imagenet import preprocess_input

    return preprocess_input(pixels)
