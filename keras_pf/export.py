"""TFLite (LiteRT) export for mobile: float32, float16, dynamic-range and int8 files.

Every file is built for a phone: batch 1, static shapes, TFLite builtin ops only (no Flex
ops, no dynamic-shape ops such as SHAPE/GATHER/PACK/STRIDED_SLICE), optionally with the
ImageNet normalization inside so that an app feeds RGB pixels. `check_tflite` measures
how faithful a file is and which ops the default (XNNPACK) delegate leaves outside.

TensorFlow-specific by nature (TFLiteConverter, LiteRT interpreter), hence its own module.
"""

import os
import tempfile
import warnings

import numpy as np

import keras

from keras_pf.files import write_atomic

PRECISIONS = ("float32", "float16", "dynamic", "int8")

# Ops that exist only to compute shapes at run time: a static batch-1 graph has none.
DYNAMIC_SHAPE_OPS = frozenset({
    "SHAPE", "GATHER", "GATHER_ND", "PACK", "UNPACK", "STRIDED_SLICE", "SLICE", "FILL",
    "RANGE", "BROADCAST_ARGS", "BROADCAST_TO", "WHERE", "SIZE", "RANK", "DYNAMIC_UPDATE_SLICE",
})


class CalibrationWarning(UserWarning):
    """Int8 calibration is not on real images: the int8 accuracy will suffer."""


# ---------------------------------------------------------------------------- building


def mobile_model(model, include_preprocessing=False, input_dtype="float32"):
    """`model` behind a batch-1, static-shape input, optionally with the normalization.

    With `include_preprocessing`, the input is RGB pixels in [0, 255] (`input_dtype`
    "float32" or "uint8") and `keras_pf.preprocess_input`'s mean/std normalization runs
    inside the graph as one Normalization layer (folded into a MUL/ADD by the converter).
    """
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


def _converter(model):
    """A TFLiteConverter for a batch-1 Keras 3 model, via a SavedModel (the path Keras'
    own `model.export(format="litert")` takes) but restricted to TFLite builtins, so
    that a Flex op fails here rather than on the phone."""
    import tensorflow as tf
    from keras.export import ExportArchive

    saved_dir = tempfile.mkdtemp(prefix="keras_pf_export_")
    archive = ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec(tuple(model.input_shape), model.inputs[0].dtype, name=model.inputs[0].name)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
    archive.write_out(saved_dir, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter, saved_dir


def _tf_keras_converter(model):
    """TFLiteConverter for a tf_keras model (the QAT models of `keras_pf.quantization`)."""
    import tensorflow as tf

    shape = (1, *model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def serve(x):
        return model(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _is_tf_keras(model):
    return not isinstance(model, keras.Model)


# ------------------------------------------------------------------------- calibration


def calibration_images(calibration, image_size, raw_pixels, num_images=100, seed=0):
    """`(images, source_note)`: up to `num_images` float32 images of `image_size`, as the
    exported file consumes them (raw [0, 255] pixels if `raw_pixels`, else preprocessed).

    `calibration`: a numpy array (used as given), a directory of images (class
    subfolders or flat) or `"tfds:NAME"` (read through `keras_pf.data.eval_dataset`), or
    None: uniform random images, with a `CalibrationWarning`.
    """
    if calibration is None:
        warnings.warn(
            "No calibration images given: int8 calibration falls back to uniform random "
            "images, so activation ranges are guesses and int8 accuracy WILL suffer. "
            "Pass real images (calibration=DIR, 'tfds:NAME' or an array; CLI: "
            "--calibration).", CalibrationWarning, stacklevel=3)
        rng = np.random.default_rng(seed)
        pixels = rng.uniform(0, 255, (num_images, *image_size, 3)).astype("float32")
        if raw_pixels:
            return pixels, "uniform random pixels (no calibration images given)"
        from keras_pf.imagenet import preprocess_input

        return preprocess_input(pixels), "uniform random pixels (no calibration images given)"
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
    if not source.startswith("tfds:") and not os.path.isdir(source):
        raise ValueError(
            f"Calibration source {source!r} is neither a directory of images nor "
            "'tfds:NAME'. Pass a folder of images, e.g. --calibration ~/val_images."
        )
    from keras_pf import data
    from keras_pf.imagenet import preprocess_input

    dataset, _ = data.eval_dataset(source, image_size=tuple(image_size), batch_size=16,
                                   preprocessing=None if raw_pixels else preprocess_input)
    batches, count = [], 0
    for images, _ in dataset:
        batches.append(np.asarray(images, dtype="float32"))
        count += len(batches[-1])
        if count >= num_images:
            break
    if not batches:
        raise ValueError(f"Calibration source {source!r} yielded no images.")
    images = np.concatenate(batches)[:num_images]
    return images, f"{len(images)} images from {source}"


# ---------------------------------------------------------------------------- export


def export_tflite(model, path, precision="float32", calibration=None,
                  include_preprocessing=False, num_calibration=100, input_dtype="float32",
                  labels=None):
    """Write a mobile-ready `.tflite` file of `model` to `path` (atomically); return `path`.

    Args:
        model: a built Keras 3 model with a fixed input size (any model, e.g.
            `keras.applications.ResNet50`), or a QAT model of
            `keras_pf.quantization.quantize_aware` (then `precision="int8"`).
        path: the output file, ending in ".tflite".
        precision: "float32"; "float16" (float16 weights, about 1/2 the size);
            "dynamic" (int8 weights, float activations, about 1/4); "int8" (int8
            weights and activations calibrated on `calibration`; float input/output).
        calibration: int8 only: a directory of images, "tfds:NAME", or an array of
            images as the exported file consumes them (raw pixels with
            `include_preprocessing`, else preprocessed). None falls back to random
            images with a `CalibrationWarning`.
        include_preprocessing: put `keras_pf.preprocess_input` in the graph, so the
            app feeds RGB pixels in [0, 255].
        num_calibration: how many calibration images to use.
        input_dtype: "uint8" to feed uint8 pixels (with `include_preprocessing`).
        labels: class names, one per output, written beside the file as
            `<path without .tflite>.labels.txt`; by default the ImageNet names for a
            1000-way classifier, nothing otherwise.

    The file has batch 1 and static shapes, and only TFLite builtin ops.
    """
    import tensorflow as tf

    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"The output file must end with '.tflite'; received {path!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; received {precision!r}")
    qat = _is_tf_keras(model)
    if qat:
        if include_preprocessing:
            raise ValueError("include_preprocessing is not supported for QAT models; "
                             "export the QAT model as is and normalize in the app.")
        converter = _tf_keras_converter(model)
        saved_dir = None
    else:
        converter, saved_dir = _converter(mobile_model(model, include_preprocessing, input_dtype))
    try:
        if precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if not qat:  # a QAT model carries its own ranges
                image_size = tuple(model.input_shape[1:3])
                images, note = calibration_images(calibration, image_size, include_preprocessing,
                                                  num_calibration)
                print(f"int8 calibration on {note}")

                def representative_dataset():
                    for image in images:
                        yield [image[None].astype("uint8" if input_dtype == "uint8" else "float32")]

                converter.representative_dataset = representative_dataset
        content = converter.convert()
    finally:
        if saved_dir:
            import shutil

            shutil.rmtree(saved_dir, ignore_errors=True)
    write_atomic(path, content)
    _write_labels(model, path, labels)
    return path


def labels_path(path):
    return os.fspath(path)[: -len(".tflite")] + ".labels.txt"


def _write_labels(model, path, labels):
    out_shape = model.output_shape
    if labels is None:
        if not (isinstance(out_shape, tuple) and len(out_shape) == 2 and out_shape[-1] == 1000):
            return None
        from keras_pf.imagenet import class_index

        labels = [name for _, name in (class_index()[i] for i in range(1000))]
    labels = list(labels)
    if len(labels) != out_shape[-1]:
        raise ValueError(f"{len(labels)} labels for a model with {out_shape[-1]} outputs")
    return write_atomic(labels_path(path), "\n".join(labels) + "\n")


# ---------------------------------------------------------------------- run and inspect


def interpreter(path, delegate=True, num_threads=None):
    """A LiteRT interpreter of `path`, tensors allocated. `delegate=False` runs the
    builtin kernels only (no XNNPACK), which is how the raw op list is read."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if delegate
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = Interpreter(model_path=os.fspath(path), num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


def run_tflite(path, images, delegate=True, num_threads=None):
    """Outputs (numpy, float32) of the `.tflite` file on `images`, one image at a time,
    with the interpreter's default (XNNPACK) delegate. Quantized outputs are
    dequantized."""
    interp = interpreter(path, delegate, num_threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    images = np.asarray(images)
    results = []
    for image in images:
        x = image[None]
        if inp["dtype"] in (np.int8, np.uint8) and inp["quantization"][0] and not np.issubdtype(images.dtype, np.integer):
            scale, zero = inp["quantization"]
            x = np.round(x / scale + zero)
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8) and out["quantization"][0]:
            scale, zero = out["quantization"]
            y = (y.astype("float32") - zero) * scale
        results.append(y[0].astype("float32"))
    return np.stack(results)


def tflite_ops(path):
    """The op names of the file's graph, in execution order (builtin kernels, no delegate)."""
    return [op["op_name"] for op in interpreter(path, delegate=False)._get_ops_details()]


def undelegated_ops(path):
    """Ops the default (XNNPACK) delegate leaves to builtin kernels: `{op_name: count}`.

    Applying a delegate appends one "DELEGATE" node per partition and keeps the original
    nodes in the node list, so membership is rebuilt from the graph: a partition is every
    node reached walking back from its DELEGATE node's outputs, stopping at that node's
    inputs. Any original node in no partition runs outside the delegate.
    """
    ops = interpreter(path, delegate=True)._get_ops_details()
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {t: op["index"] for op in originals for t in op["outputs"]}
    delegated = set()
    for node in ops:
        if node["op_name"] != "DELEGATE":
            continue
        boundary = set(node["inputs"])
        stack = [t for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer:
                continue
            index = producer[tensor]
            if index not in delegated:
                delegated.add(index)
                stack.extend(ops[index]["inputs"])
    remaining = {}
    for op in originals:
        if op["index"] not in delegated:
            remaining[op["op_name"]] = remaining.get(op["op_name"], 0) + 1
    return remaining


def dynamic_ops(path):
    """Ops in the file that compute shapes at run time or need the Flex (TF) runtime."""
    return sorted({op for op in tflite_ops(path)
                   if op in DYNAMIC_SHAPE_OPS or op.startswith("Flex") or op == "CUSTOM"})


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def weight_dtypes(path):
    """`{op_name: sorted dtype names of its weights}` for convolutions and dense layers
    (second input of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED): shows whether an int8
    file really runs int8 weights, or dequantizes them first (then the weight input is
    float, produced by a DEQUANTIZE op)."""
    interp = interpreter(path, delegate=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    # float16 weights are stored as float16 and widened by a DEQUANTIZE op at load time
    dequantized = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
    found = {}
    for op in ops:
        if op["op_name"] in WEIGHTED_OPS[:3] and len(op["inputs"]) > 1:
            weight = dequantized.get(op["inputs"][1], op["inputs"][1])
            found.setdefault(op["op_name"], set()).add(dtypes[weight])
    return {name: sorted(kinds) for name, kinds in found.items()}


# ------------------------------------------------------------------------------ check


def check_tflite(model, path, images, include_preprocessing=False):
    """How faithful the `.tflite` file at `path` is to `model` on `images` (as the file
    consumes them). Returns a dict:

    - `max_abs_diff`, `mean_abs_diff`: TFLite vs Keras outputs (for a float32 file
      this should be ~1e-6; reduced precisions are judged by the next two),
    - `top1_agreement`: fraction of images whose top-1 class matches Keras',
    - `dynamic_ops`: shape-computing or Flex ops in the file (should be empty),
    - `undelegated_ops`: `{op: count}` left outside the XNNPACK delegate,
    - `weight_dtypes`, `size_bytes`.
    """
    images = np.asarray(images)
    keras_in = images.astype("float32")
    if include_preprocessing:
        from keras_pf.imagenet import preprocess_input

        keras_in = preprocess_input(keras_in)
    reference = np.asarray(model(keras_in, training=False), dtype="float32")
    outputs = run_tflite(path, images)
    diff = np.abs(outputs - reference)
    report = {
        "path": os.fspath(path),
        "size_bytes": os.path.getsize(path),
        "images": len(images),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "dynamic_ops": dynamic_ops(path),
        "undelegated_ops": undelegated_ops(path),
        "weight_dtypes": weight_dtypes(path),
    }
    if reference.ndim == 2:
        report["top1_agreement"] = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
    return report


def format_check(reports):
    """A Markdown table of `check_tflite` reports (one row per file)."""
    rows = ["| file | size (KB) | max abs diff | mean abs diff | top-1 agreement | weights "
            "| dynamic ops | ops outside XNNPACK |",
            "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        agreement = f"{100 * r['top1_agreement']:.1f}%" if "top1_agreement" in r else "-"
        weights = ", ".join(f"{k}: {'/'.join(v)}" for k, v in r["weight_dtypes"].items())
        outside = ", ".join(f"{k} x{n}" for k, n in sorted(r["undelegated_ops"].items())) or "none"
        rows.append(
            f"| {os.path.basename(r['path'])} | {r['size_bytes'] / 1024:.0f} | "
            f"{r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} | {agreement} | {weights} | "
            f"{', '.join(r['dynamic_ops']) or 'none'} | {outside} |")
    return "\n".join(rows)


# -------------------------------------------------------------------------------- CLI


def add_export_arguments(parser):
    parser.add_argument("model", help="a keras_pf model name (keras_pf.MODELS), e.g. PFResNet50Max")
    parser.add_argument("--weights", default=None,
                        help="weights tag, .weights.h5 or .pth file; 'none' for random "
                             "(default: the model's own default)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--calibration", default=None,
                        help="int8 calibration (and --check) images: DIR or tfds:NAME")
    parser.add_argument("--num-calibration", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=224, help="square input side")
    parser.add_argument("--include-preprocessing", action="store_true",
                        help="normalize inside the graph: the app feeds RGB pixels in [0, 255]")
    parser.add_argument("--uint8-input", action="store_true",
                        help="with --include-preprocessing: the input is uint8 pixels")
    parser.add_argument("--logits", action="store_true",
                        help="output logits instead of softmax probabilities (the check "
                             "then compares logits, which shows errors more plainly)")
    parser.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    parser.add_argument("--check", action="store_true",
                        help="compare the file with the Keras model and print a table")


def run_export(args):
    import keras_pf
    from keras_pf.imagenet import preprocess_input

    if args.model not in keras_pf.MODELS:
        raise ValueError(f"Unknown model {args.model!r}; choose from {sorted(keras_pf.MODELS)}")
    if args.uint8_input and not args.include_preprocessing:
        raise ValueError("--uint8-input feeds raw pixels: add --include-preprocessing")
    kwargs = {"input_shape": (args.input_size, args.input_size, 3)}
    if args.logits:
        kwargs["classifier_activation"] = None
    if args.weights is not None:
        kwargs["weights"] = None if args.weights.lower() == "none" else args.weights
    model = keras_pf.MODELS[args.model](**kwargs)
    input_dtype = "uint8" if args.uint8_input else "float32"
    images = None
    if args.calibration is not None:
        images, note = calibration_images(args.calibration, (args.input_size,) * 2,
                                          args.include_preprocessing, args.num_calibration)
        print(f"calibration/check images: {note}")
    path = export_tflite(model, args.output, args.precision,
                         calibration=images,
                         include_preprocessing=args.include_preprocessing,
                         num_calibration=args.num_calibration, input_dtype=input_dtype)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    if os.path.exists(labels_path(path)):
        print(f"wrote {labels_path(path)}")
    if args.check:
        check_images = images
        if check_images is None:
            print("check images: 16 uniform random images (pass --calibration DIR to "
                  "check on real images)")
            pixels = np.random.default_rng(0).uniform(0, 255, (16, args.input_size, args.input_size, 3))
            check_images = pixels if args.include_preprocessing else preprocess_input(pixels)
        if args.uint8_input:
            check_images = np.clip(np.round(check_images), 0, 255).astype("uint8")
        reports = [check_tflite(model, path, check_images, args.include_preprocessing)]
        if args.precision != "float32":  # the float32 file beside it, for reference
            with tempfile.TemporaryDirectory() as tmp:
                ref = export_tflite(model, os.path.join(tmp, "float32.tflite"),
                                    include_preprocessing=args.include_preprocessing,
                                    input_dtype=input_dtype)
                reports.insert(0, check_tflite(model, ref, check_images, args.include_preprocessing))
        print(format_check(reports))
        if reports[-1]["dynamic_ops"]:
            raise ValueError(f"the file has dynamic-shape/Flex ops: {reports[-1]['dynamic_ops']}")
