"""TFLite (LiteRT) export for mobile: float32, float16, dynamic-range and int8 files.

Every file is built for a phone: batch 1, static shapes, TFLite builtin ops only (no Flex
ops, no dynamic-shape ops such as SHAPE/GATHER/PACK/STRIDED_SLICE), optionally with the
ImageNet normalization inside so that an app feeds RGB pixels. `check_tflite` measures
how faithful a file is and which ops the default (XNNPACK) delegate leaves outside.

TensorFlow-specific by nature (TFLiteConverter, LiteRT interpreter), hence its own module;
TensorFlow and Keras are imported inside the functions, so that `keras-pf export --help`
needs neither.
"""

import contextlib
import json
import os
import shutil
import tempfile
import warnings

import numpy as np

from keras_pf.files import write_atomic
from keras_pf.mobile.check import (  # noqa: F401  (part of this module's public API)
    DYNAMIC_SHAPE_OPS, WEIGHTED_OPS, check_precision, check_tflite, dynamic_ops, format_check,
    integer_ops, interpreter, run_tflite, tflite_ops, undelegated_ops, weight_dtypes)

PRECISIONS = ("float32", "float16", "dynamic", "int8")

# Input sides above this are refused before any work: int8 calibration and conversion
# memory grow with the pixel count (2048 px used 8 GB), and no phone model needs more.
MAX_INPUT_SIDE = 1024
MIN_INPUT_SIDE = 16
# Temporary SavedModels: <tempdir>/keras_pf_export_<pid>_*; a later export removes those
# whose process is gone (killed exports cannot clean up after themselves).
TEMP_PREFIX = "keras_pf_export_"


class CalibrationWarning(UserWarning):
    """Int8 calibration is not on real images: the int8 accuracy will suffer."""


# ---------------------------------------------------------------------------- building


def mobile_model(model, include_preprocessing=False, input_dtype="float32"):
    """`model` behind a batch-1, static-shape input, optionally with the normalization.

    With `include_preprocessing`, the input is RGB pixels in [0, 255] (`input_dtype`
    "float32" or "uint8") and `keras_pf.preprocess_input`'s mean/std normalization runs
    inside the graph as one Normalization layer (folded into a MUL/ADD by the converter).
    """
    import keras

    shape = tuple(model.input_shape[1:])
    if len(model.inputs) != 1 or len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            "Mobile export needs a model with one image input of fixed height, width "
            f"and channels; received input_shape={model.input_shape}. Build the model "
            "with e.g. input_shape=(224, 224, 3)."
        )
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"input_dtype must be 'float32' or 'uint8'; received {input_dtype!r}")
    if input_dtype == "uint8" and not include_preprocessing:
        raise ValueError("input_dtype='uint8' means raw pixels: use it with include_preprocessing=True")
    inputs = keras.Input(shape=shape, batch_size=1, dtype=input_dtype, name="pixels" if include_preprocessing else "image")
    x = inputs
    if include_preprocessing:
        from keras_pf.imagenet import MEAN, STD

        if input_dtype == "uint8":
            x = keras.ops.cast(x, "float32")
        mean = [255.0 * m for m in MEAN]
        variance = [(255.0 * s) ** 2 for s in STD]
        x = keras.layers.Normalization(mean=mean, variance=variance, name="preprocess")(x)
    outputs = model(x, training=False)
    return keras.Model(inputs, outputs, name=model.name + "_mobile")


# ------------------------------------------------------------------- temporary folders


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temp_dirs(root=None):
    """Remove the temporary SavedModels of exports whose process is gone (killed)."""
    root = root or tempfile.gettempdir()
    try:
        entries = os.listdir(root)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(TEMP_PREFIX):
            continue
        pid = entry[len(TEMP_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


@contextlib.contextmanager
def _temp_dir():
    """A temporary folder removed on every exit path; if the process is killed, the next
    export removes it (`remove_stale_temp_dirs`)."""
    remove_stale_temp_dirs()
    path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}_")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_partials(path):
    """Partial `.tmp_*<name>` files that a killed export left beside `path`."""
    directory, base = os.path.split(os.path.abspath(path))
    if os.path.isdir(directory):
        for entry in os.listdir(directory):
            if entry.startswith(".tmp_") and entry.endswith(base):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, entry))


# ---------------------------------------------------------------------- converters


def _convert(model, configure, run):
    """TFLite bytes of a batch-1 Keras 3 model, via a SavedModel (the path Keras' own
    `model.export(format="litert")` takes) in a temporary folder, restricted to TFLite
    builtins so that a Flex op fails here rather than on the phone. `configure(converter)`
    sets the precision, `run(converter)` converts."""
    import tensorflow as tf
    from keras.export import ExportArchive

    with _temp_dir() as saved_dir:
        archive = ExportArchive()
        archive.track(model)
        spec = tf.TensorSpec(tuple(model.input_shape), model.inputs[0].dtype, name=model.inputs[0].name)
        archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
        archive.write_out(saved_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        configure(converter)
        return run(converter)


def _convert_tf_keras(model, configure, run, include_preprocessing=False, input_dtype="float32"):
    """TFLite bytes of a tf_keras model (the QAT models of `keras_pf.mobile.quantization`),
    optionally with the ImageNet normalization in front (float ops before the first
    quantize op)."""
    import tensorflow as tf

    shape = (1, *model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8 if input_dtype == "uint8" else tf.float32)])
    def serve(x):
        x = tf.cast(x, tf.float32)
        if include_preprocessing:
            from keras_pf.imagenet import MEAN, STD

            x = (x - tf.constant([255.0 * m for m in MEAN])) / tf.constant([255.0 * s for s in STD])
        return model(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(converter)
    return run(converter)


def _is_tf_keras(model):
    import keras

    return not isinstance(model, keras.Model)


# ------------------------------------------------------------------------- calibration


def _image_files(directory):
    """Image files of a folder: class subfolders or flat (sorted, one pass)."""
    from keras_pf.data import IMAGE_EXTENSIONS

    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise ValueError(f"Calibration folder {directory!r} has no images "
                         f"({', '.join(IMAGE_EXTENSIONS)}), neither flat nor in subfolders.")
    return found


def _folder_images(directory, image_size, num_images):
    """Up to `num_images` images of the folder (spread over it, so every class subfolder
    is sampled), as float32 [0, 255] pixels (resize + center crop as in evaluation).
    Policy: an unreadable image stops the export before converting, naming the file."""
    import tensorflow as tf
    from keras_pf.data import eval_transform

    files = _image_files(directory)
    picks = np.unique(np.linspace(0, len(files) - 1, min(num_images, len(files))).round().astype(int))
    images = []
    for index in picks:
        path = files[index]
        try:
            data = tf.io.read_file(path)
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            images.append(np.asarray(eval_transform(image, tuple(image_size)), dtype="float32"))
        except (tf.errors.OpError, OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Calibration image {path!r} cannot be read ({reason[:120]}); remove or "
                "replace it, nothing was converted.") from None
    return np.stack(images)


def calibration_images(calibration, image_size, raw_pixels, num_images=100, seed=0):
    """`(images, source_note)`: up to `num_images` float32 images of `image_size`, as the
    exported file consumes them (raw [0, 255] pixels if `raw_pixels`, else preprocessed).

    `calibration`: a numpy array (used as given), a directory of images (class
    subfolders or flat; an unreadable image is an error naming it) or `"tfds:NAME"`
    (read through `keras_pf.data.eval_dataset`), or None: uniform random images, with a
    `CalibrationWarning`.
    """
    from keras_pf.imagenet import preprocess_input

    if num_images <= 0:
        raise ValueError(f"The number of calibration images must be positive; received {num_images}.")
    if calibration is None:
        warnings.warn(
            "No calibration images given: int8 calibration falls back to uniform random "
            "images, so activation ranges are guesses and int8 accuracy WILL suffer. "
            "Pass real images (calibration=DIR, 'tfds:NAME' or an array; CLI: "
            "--calibration).", CalibrationWarning, stacklevel=3)
        rng = np.random.default_rng(seed)
        pixels = rng.uniform(0, 255, (num_images, *image_size, 3)).astype("float32")
        note = "uniform random pixels (no calibration images given)"
        return (pixels if raw_pixels else preprocess_input(pixels)), note
    if isinstance(calibration, np.ndarray) or (
            not isinstance(calibration, (str, os.PathLike)) and hasattr(calibration, "shape")):
        images = np.asarray(calibration, dtype="float32")
        if images.ndim != 4 or tuple(images.shape[1:3]) != tuple(image_size):
            raise ValueError(
                f"Calibration array must be (N, {image_size[0]}, {image_size[1]}, C) images; "
                f"received shape {images.shape}."
            )
        return images[:num_images], f"{min(len(images), num_images)} given images"
    source = os.fspath(calibration)
    if source.startswith("tfds:"):
        from keras_pf import data

        dataset, _ = data.eval_dataset(source, image_size=tuple(image_size), batch_size=16,
                                       preprocessing=None)
        batches, count = [], 0
        for images, _ in dataset:
            batches.append(np.asarray(images, dtype="float32"))
            count += len(batches[-1])
            if count >= num_images:
                break
        if not batches:
            raise ValueError(f"Calibration source {source!r} yielded no images.")
        pixels = np.concatenate(batches)[:num_images]
    elif os.path.isdir(source):
        pixels = _folder_images(source, image_size, num_images)
    else:
        raise ValueError(
            f"Calibration source {source!r} is neither a directory of images nor "
            "'tfds:NAME'. Pass a folder of images (flat or one subfolder per class), "
            "e.g. --calibration ~/val_images."
        )
    images = pixels if raw_pixels else preprocess_input(pixels)
    return images, f"{len(images)} images from {source}"


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
            `keras_pf.mobile.quantization.quantize_aware` (then `precision="int8"`).
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
            fully int8 graph). See `keras_pf.mobile.quantization.convert_int8`. Either
            way, an int8 file runs non-overlapping average pools as fixed depthwise
            convolutions (exact; XNNPACK runs those in int8): `keras_pf.mobile.rewrite`.

    The file has batch 1 and static shapes, and only TFLite builtin ops. Temporary files
    live in a temporary folder removed on every exit (a killed export's folder is removed
    by the next export).
    """
    import tensorflow as tf

    path = os.fspath(path)
    qat = _is_tf_keras(model)
    check_export_arguments(path, precision, num_calibration, tuple(model.input_shape[1:3]))
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"input_dtype must be 'float32' or 'uint8'; received {input_dtype!r}")
    if input_dtype == "uint8" and not include_preprocessing:
        raise ValueError("input_dtype='uint8' means raw pixels: use it with include_preprocessing=True")
    labels = _labels(model, labels)
    _remove_stale_partials(path)
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
        from keras_pf.mobile.quantization import convert_int8

        content, kept_float, left = convert_int8(converter, float_fallback)
        if kept_float:
            print("int8: kept float (no int8 kernel in XNNPACK): " + _op_counts(kept_float))
        if left:
            print("int8: still on TFLite's reference kernels (slow on phone CPUs): "
                  + _op_counts(left))
        return content

    if qat:
        content = _convert_tf_keras(model, configure, run, include_preprocessing, input_dtype)
    else:
        if precision == "int8":
            from keras_pf.mobile.rewrite import average_pools_as_convolutions

            model = average_pools_as_convolutions(model)
        content = _convert(mobile_model(model, include_preprocessing, input_dtype), configure, run)
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
    from keras_pf.mobile.quantization import BY_OP_TYPE

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
    from keras_pf.imagenet import MEAN, STD
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


def labels_path(path):
    return os.fspath(path)[: -len(".tflite")] + ".labels.txt"


def _labels(model, labels):
    """The class names for `model`'s output: `labels` checked, or ImageNet's for a
    1000-way classifier, or None."""
    out_shape = model.output_shape
    classes = out_shape[-1] if isinstance(out_shape, tuple) and len(out_shape) == 2 else None
    if labels is None:
        if classes != 1000:
            return None
        from keras_pf.imagenet import class_index

        return [name for _, name in (class_index()[i] for i in range(1000))]
    labels = [str(label) for label in labels]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a model with {classes} outputs")
    if any("\n" in label or not label.strip() for label in labels):
        raise ValueError("Labels must be non-empty single-line names")
    return labels


def read_labels(path):
    """Class names from a file: a JSON list (class_names.json) or one name per line."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read labels file {path!r}: {error}") from None
    if path.endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Labels file {path!r} is not valid JSON ({error}); it should be "
                             "a list of class names, as finetune's class_names.json") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"Labels file {path!r} must hold a JSON list of class names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


# -------------------------------------------------------------------------------- CLI


def add_export_arguments(parser):
    import argparse

    parser.add_argument("model", help="a keras_pf model name (keras_pf.MODELS), e.g. PFResNet50Max, "
                                      "or a saved .keras model (e.g. finetune's runs/ft/model.keras)")
    parser.add_argument("--weights", default=None,
                        help="named models: weights tag, .weights.h5 or .pth file; 'none' for "
                             "random (default: the model's own default)")
    parser.add_argument("--labels", default=None,
                        help="class names: a JSON list or one per line (default: ImageNet's for "
                             "1000 classes, the class_names.json beside a .keras model)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--calibration", default=None,
                        help="int8 calibration (and --check) images: DIR (flat or class "
                             "subfolders; an unreadable image stops the export, named) or tfds:NAME")
    parser.add_argument("--num-calibration", type=int, default=100)
    parser.add_argument("--full-int8", dest="float_fallback", action="store_false",
                        help="int8: quantize every op, also those the CPU delegate (XNNPACK) "
                             "has no int8 kernel for (default: those stay float, faster on "
                             "phone CPUs); for NPU delegates that need a fully int8 graph")
    parser.add_argument("--input-size", type=int, default=224,
                        help=f"square input side of a named model ({MIN_INPUT_SIDE}-{MAX_INPUT_SIDE})")
    parser.add_argument("--include-preprocessing", action=argparse.BooleanOptionalAction, default=True,
                        help="normalize inside the graph, so the app feeds RGB pixels in [0, 255] "
                             "(default; MediaPipe needs it). --no-include-preprocessing: the file "
                             "takes preprocessed tensors, metadata states the per-channel "
                             "normalization (TFLite Task Library only)")
    parser.add_argument("--uint8-input", action="store_true",
                        help="the input is uint8 pixels (needs the in-graph preprocessing)")
    parser.add_argument("--logits", action="store_true",
                        help="output logits instead of softmax probabilities (the check "
                             "then compares logits, which shows errors more plainly)")
    parser.add_argument("--no-metadata", dest="metadata", action="store_false",
                        help="write no TFLite metadata (labels then only in the .labels.txt)")
    parser.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    parser.add_argument("--check", action="store_true",
                        help="compare the file with the Keras model and print a table")


def is_saved_model_path(name):
    return os.fspath(name).endswith(".keras")


def load_saved_model(path):
    """A `.keras` model (keras_pf's layers registered) and its class names, from the
    `class_names.json` beside it (None if there is none)."""
    import keras_pf  # noqa: F401  (registers keras_pf's layers for deserialization)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Model file {path!r} not found.")
    from keras_pf.safe_load import load_model  # a hostile or broken file: one line

    model = load_model(path)
    names_path = os.path.join(os.path.dirname(os.path.abspath(path)), "class_names.json")
    return model, (read_labels(names_path) if os.path.exists(names_path) else None)


def run_export(args):
    import keras_pf
    from keras_pf.imagenet import preprocess_input

    saved = is_saved_model_path(args.model)
    if not saved and args.model not in keras_pf.MODELS:
        raise ValueError(f"Unknown model {args.model!r}; choose from {sorted(keras_pf.MODELS)} "
                         "or pass a saved .keras model file")
    if args.uint8_input and not args.include_preprocessing:
        raise ValueError("--uint8-input feeds raw pixels: drop --no-include-preprocessing")
    check_export_arguments(args.output, args.precision, args.num_calibration,
                           None if saved else (args.input_size,) * 2)
    labels = read_labels(args.labels) if args.labels else None
    if saved:
        if args.weights is not None or args.logits:
            raise ValueError("--weights and --logits apply to named models; a .keras file "
                             "carries its own weights and head")
        model, beside = load_saved_model(args.model)
        labels = labels if labels is not None else beside
        size = tuple(model.input_shape[1:3])
    else:
        kwargs = {"input_shape": (args.input_size, args.input_size, 3)}
        if args.logits:
            kwargs["classifier_activation"] = None
        if args.weights is not None:
            kwargs["weights"] = None if args.weights.lower() == "none" else args.weights
        model = keras_pf.MODELS[args.model](**kwargs)
        size = (args.input_size,) * 2
    input_dtype = "uint8" if args.uint8_input else "float32"
    images = held_out = None
    if args.calibration is not None:
        extra = CHECK_IMAGES if args.check else 0
        images, note = calibration_images(args.calibration, size, args.include_preprocessing,
                                          args.num_calibration + extra)
        print(f"calibration/check images: {note}")
        if args.check:
            images, held_out = split_held_out(images, CHECK_IMAGES)
    path = export_tflite(model, args.output, args.precision,
                         calibration=images,
                         include_preprocessing=args.include_preprocessing,
                         num_calibration=args.num_calibration, input_dtype=input_dtype,
                         labels=labels, metadata=args.metadata,
                         float_fallback=args.float_fallback)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    if os.path.exists(labels_path(path)):
        print(f"wrote {labels_path(path)}")
    if args.check:
        check_images = held_out if held_out is not None else images
        if held_out is not None:
            print(f"check images: {len(held_out)} images held out from the "
                  f"{len(images)} calibration images")
        elif check_images is not None:
            print("check images: the only calibration image (too few images to hold some out)")
        if check_images is None:
            print("check images: 16 uniform random images (pass --calibration DIR to "
                  "check on real images)")
            pixels = np.random.default_rng(0).uniform(0, 255, (16, *size, 3))
            check_images = pixels if args.include_preprocessing else preprocess_input(pixels)
        if args.uint8_input:
            check_images = np.clip(np.round(check_images), 0, 255).astype("uint8")
        reports = [check_tflite(model, path, check_images, args.include_preprocessing)]
        if args.precision != "float32":  # the float32 file beside it, for reference
            with _temp_dir() as tmp:
                ref = export_tflite(model, os.path.join(tmp, "float32.tflite"),
                                    include_preprocessing=args.include_preprocessing,
                                    input_dtype=input_dtype, metadata=False, labels=labels)
                reports.insert(0, check_tflite(model, ref, check_images, args.include_preprocessing))
        print(format_check(reports))
        if reports[-1]["dynamic_ops"]:
            raise ValueError(f"the file has dynamic-shape/Flex ops: {reports[-1]['dynamic_ops']}")
