"""TFLite (LiteRT) export for mobile: float32, float16, dynamic-range and int8 files.

Every file is built for a phone: batch 1, static shapes, TFLite builtin ops only (no Flex
ops, no dynamic-shape ops such as SHAPE/GATHER/PACK/STRIDED_SLICE), optionally with the
ImageNet normalization inside so that an app feeds RGB pixels. `check_tflite` measures
how faithful a file is and which ops the default (XNNPACK) delegate leaves outside.

TensorFlow-specific by nature (TFLiteConverter, LiteRT interpreter), hence its own module.
"""

import os
import tempfile

import numpy as np

from keras_pf.files import write_atomic
from keras_pf.mobile import converter
from keras_pf.mobile.calibration import calibration_images
from keras_pf.mobile.check import check_precision
from keras_pf.mobile.labels import labels_path, model_labels

PRECISIONS = ("float32", "float16", "dynamic", "int8")

# Input sides above this are refused before any work: int8 calibration and conversion
# memory grow with the pixel count (2048 px used 8 GB), and no phone model needs more.
MAX_INPUT_SIDE = 1024
MIN_INPUT_SIDE = 16


# ---------------------------------------------------------------------------- building


def mobile_model(model, include_preprocessing=False, input_dtype="float32", batch_size=1):
    """`model` behind a batch-1, static-shape input, optionally with the normalization.
    (`batch_size=None`: a variable batch, for the server formats of `keras_pf.export`.)

    With `include_preprocessing`, the input is RGB pixels in [0, 255] (`input_dtype`
    "float32" or "uint8") and `keras_pf.preprocess_input`'s mean/std normalization runs
    inside the graph as one Normalization layer (folded into a MUL/ADD by the converter).
    """
    import keras

    shape = tuple(model.input_shape[1:])
    if len(model.inputs) != 1 or len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            "Export needs a model with one image input of fixed height, width "
            f"and channels; received input_shape={model.input_shape}. Build the model "
            "with e.g. input_shape=(224, 224, 3)."
        )
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"input_dtype must be 'float32' or 'uint8'; received {input_dtype!r}")
    if input_dtype == "uint8" and not include_preprocessing:
        raise ValueError("input_dtype='uint8' means raw pixels: use it with include_preprocessing=True")
    inputs = keras.Input(shape=shape, batch_size=batch_size, dtype=input_dtype, name="pixels" if include_preprocessing else "image")
    x = inputs
    if include_preprocessing:
        from keras_pf.models.imagenet import MEAN, STD

        if input_dtype == "uint8":
            x = keras.ops.cast(x, "float32")
        mean = [255.0 * m for m in MEAN]
        variance = [(255.0 * s) ** 2 for s in STD]
        x = keras.layers.Normalization(mean=mean, variance=variance, name="preprocess")(x)
    outputs = model(x, training=False)
    return keras.Model(inputs, outputs, name=model.name + "_mobile")


# ---------------------------------------------------------------------------- export


# `--check` compares the file with Keras on this many images of `--calibration`, held out
# from the int8 calibration (an int8 file matches its calibration images best).
CHECK_IMAGES = 32


def split_held_out(images, count):
    """`(rest, held_out)`: `count` images spread over `images` (at most half of them)
    held out, e.g. from int8 calibration for checking; `(images, None)` for one image."""
    count = min(count, len(images) // 2)
    if count == 0:
        return images, None
    held = np.unique(np.linspace(0, len(images) - 1, count).round().astype(int))
    mask = np.zeros(len(images), bool)
    mask[held] = True
    return images[~mask], images[mask]


def check_export_arguments(path, precision, num_calibration=100, image_size=None):
    """Raise ValueError for arguments that would fail or mislead, before any work."""
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"The output file must end with '.tflite'; received {path!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; received {precision!r}")
    if precision == "int8" and num_calibration <= 0:
        raise ValueError(f"int8 needs calibration images: --num-calibration must be at least 1; "
                         f"received {num_calibration}.")
    if image_size is not None:
        for side in image_size:  # None: a variable size, which mobile_model explains
            if side is not None and not MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE:
                raise ValueError(
                    f"Input size {tuple(image_size)} is outside [{MIN_INPUT_SIDE}, {MAX_INPUT_SIDE}] "
                    "pixels per side: a phone model needs no more, and conversion memory grows "
                    "with the pixel count. Use e.g. --input-size 224.")
    if os.path.isdir(path):
        raise ValueError(f"Output {path!r} is a folder; name the .tflite file to write.")
    check_output_folder(path)


def check_output_folder(path):
    """Raise ValueError unless the folder `path` goes in can be created and written."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # the nearest existing folder must let us create the rest
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"Output path {path!r}: {parent!r} is a file, not a folder; "
                         "choose another -o/--output.")
    try:  # a real probe: permissions alone say nothing for root or read-only mounts
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise ValueError(f"Output folder {parent!r} is not writable ({error.strerror}); "
                         "choose another -o/--output.") from None


DEFAULT_LICENSE = ("keras_pf code: MIT. Weights: those of the source model (the published "
                   "ImageNet weights of Han et al. 2022, or your own fine-tuning).")


def export_tflite(model, path, precision="float32", calibration=None,
                  include_preprocessing=False, num_calibration=100, input_dtype="float32",
                  labels=None, metadata=True, model_info=None, float_fallback=True):
    """Write a mobile-ready `.tflite` file of `model` to `path` (atomically); return `path`.

    Args:
        model: a built Keras 3 model with a fixed input size (any model, e.g.
            `keras.applications.ResNet50`), or a QAT model of
            `keras_pf.mobile.qat.quantize_aware` (then `precision="int8"`).
        path: the output file, ending in ".tflite".
        precision: "float32"; "float16" (float16 weights, about 1/2 the size);
            "dynamic" (int8 weights, float activations, about 1/4); "int8" (int8
            weights and activations calibrated on `calibration`; float input/output).
            The written file is read back and checked to have that precision.
        calibration: int8 only: a directory of images (flat or class subfolders),
            "tfds:NAME", or an array of images as the exported file consumes them (raw
            pixels with `include_preprocessing`, else preprocessed). None falls back to
            random images with a `CalibrationWarning`.
        include_preprocessing: put `keras_pf.preprocess_input` in the graph, so the
            app feeds RGB pixels in [0, 255]. Needed for MediaPipe Tasks, which cannot
            normalize per channel; without it the metadata states the per-channel
            normalization (honoured by the TFLite Task Library, refused by MediaPipe).
        num_calibration: how many calibration images to use (at least 1 for int8).
        input_dtype: "uint8" to feed uint8 pixels (with `include_preprocessing`).
        labels: class names, one per output: packed into the file's metadata and
            written beside it as `<path without .tflite>.labels.txt`; by default the
            ImageNet names for a 1000-way classifier, none otherwise.
        metadata: write TFLite model metadata (see `keras_pf.mobile.metadata`).
        model_info: metadata overrides: name, description, version, author, license.
        float_fallback: int8 only: keep float the ops XNNPACK (the CPU delegate of
            LiteRT, MediaPipe and Android) has no int8 kernel for (GELU, LayerNorm's
            pieces, attention's BATCH_MATMUL/SOFTMAX), so that nothing runs on TFLite's
            slow reference kernels. False: every op int8 (for NPU delegates that need a
            fully int8 graph). See `keras_pf.mobile.int8.convert_int8`. Either
            way, an int8 file runs non-overlapping average pools as fixed depthwise
            convolutions (exact; XNNPACK runs those in int8): `keras_pf.mobile.rewrite`.

    The file has batch 1 and static shapes, only TFLite builtin ops, and a
    `serving_default` signature. The conversion writes no temporary files, and the file
    appears at `path` only when complete (`keras_pf.files`), also if the process is killed.
    """
    import tensorflow as tf

    path = os.fspath(path)
    qat = converter.is_tf_keras(model)
    check_export_arguments(path, precision, num_calibration, tuple(model.input_shape[1:3]))
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"input_dtype must be 'float32' or 'uint8'; received {input_dtype!r}")
    if input_dtype == "uint8" and not include_preprocessing:
        raise ValueError("input_dtype='uint8' means raw pixels: use it with include_preprocessing=True")
    labels = model_labels(model, labels)
    converter.remove_stale_partials(path)
    images = None
    # A QAT model carries its own ranges where tfmot quantized; calibration images, if
    # given, give ranges to the layers it left float (attention, LayerNorm), so that
    # those run int8 too where TFLite has kernels.
    if precision == "int8" and not (qat and calibration is None):
        image_size = tuple(model.input_shape[1:3])
        images, note = calibration_images(calibration, image_size, include_preprocessing,
                                          num_calibration)
        print(f"int8 calibration on {note}")

    def configure(converter):
        if precision in ("float16", "dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if images is not None:
            def representative_dataset():
                for image in images:
                    yield [image[None].astype("uint8" if input_dtype == "uint8" else "float32")]

            converter.representative_dataset = representative_dataset

    def run(converter):
        if images is None:  # float, dynamic, or QAT int8 without calibration
            return converter.convert()
        from keras_pf.mobile.int8 import convert_int8

        content, kept_float, left = convert_int8(converter, float_fallback)
        if kept_float:
            print("int8: kept float (no int8 kernel in XNNPACK): " + _op_counts(kept_float))
        if left:
            print("int8: still on TFLite's reference kernels (slow on phone CPUs): "
                  + _op_counts(left))
        return content

    if qat:
        content = converter.convert_tf_keras(model, configure, run, include_preprocessing, input_dtype)
    else:
        if precision == "int8":
            from keras_pf.mobile.rewrite import average_pools_as_convolutions

            model = average_pools_as_convolutions(model)
        content = converter.convert(mobile_model(model, include_preprocessing, input_dtype), configure, run)
    if precision == "dynamic":
        from keras_pf.mobile.rewrite import float_depthwise_weights

        content, count = float_depthwise_weights(content)
        if count:
            print(f"dynamic: {count} depthwise convolution(s) kept float "
                  f"(no hybrid depthwise kernel in XNNPACK)")
    check_precision(content, precision)
    if metadata:
        from keras_pf.mobile import metadata as tflite_metadata

        content = tflite_metadata.attach_metadata(
            content, _metadata(model, labels, include_preprocessing, input_dtype, model_info), labels)
    write_atomic(path, content)
    if labels is not None:
        write_atomic(labels_path(path), "\n".join(labels) + "\n")
    return path


def _op_counts(nodes):
    """"ADD x2, SOFTMAX x1" of `[(op, node name)]`; a node kept by its op type counts as
    "all"."""
    from keras_pf.mobile.int8 import BY_OP_TYPE

    counts = {}
    for op, node in nodes:
        counts[op] = "all" if node == BY_OP_TYPE else counts.get(op, 0) + 1
    return ", ".join(f"{op} x{n}" if n != "all" else f"{op} (all)" for op, n in sorted(counts.items()))


def outputs_probabilities(model):
    """Whether `model`'s last layer ends in a softmax (probabilities, not logits)."""
    last = model.layers[-1] if model.layers else None
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax"


def _metadata(model, labels, include_preprocessing, input_dtype, model_info):
    import keras_pf
    from keras_pf.models.imagenet import MEAN, STD
    from keras_pf.mobile import metadata as tflite_metadata

    softmax = outputs_probabilities(model)
    info = {
        "name": model.name,
        "description": (f"Image classifier ({model.output_shape[-1]} classes) exported by keras_pf "
                        f"{keras_pf.__version__}. Input: one RGB image"
                        + (", pixels in [0, 255] (ImageNet normalization inside the graph)."
                           if include_preprocessing else
                           ", normalized with the ImageNet per-channel mean/std (see the input metadata).")),
        "version": keras_pf.__version__,
        "author": "keras_pf",
        "license": DEFAULT_LICENSE,
    }
    info.update(model_info or {})
    normalization = ((0.0, 1.0) if include_preprocessing
                     else ([255.0 * m for m in MEAN], [255.0 * s for s in STD]))
    return tflite_metadata.build_metadata(
        labels=labels, input_dtype=input_dtype, normalization=normalization,
        output_kind="probabilities" if softmax else "logits", **info)
