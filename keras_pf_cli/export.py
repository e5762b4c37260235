"""`keras-pf export`: a named model or a saved `.keras` file to a mobile `.tflite` file,
with labels, metadata and an optional check (`keras_pf.mobile.tasks`: a classifier, or a
saved keras-hub segmenter or detector through `keras_pf.hub.mobile`), or with `--format`
to ONNX, OpenVINO or a SavedModel (`keras_pf.export`)."""

import argparse
import os

from keras_pf_cli.args import one_of


def add_arguments(parser):
    parser.add_argument("model", help="a keras_pf model name (keras_pf.MODELS), e.g. PFResNet50Max, "
                                      "or a saved .keras model (e.g. finetune's runs/ft/model.keras, "
                                      "or a keras-hub DeepLabV3ImageSegmenter: segmenter metadata "
                                      "for MediaPipe's ImageSegmenter; or a RetinaNetObjectDetector: "
                                      "decoding and NMS in the file, anchors beside)")
    parser.add_argument("--weights", default=None,
                        help="named models: weights tag, .weights.h5 or .pth file; 'none' for "
                             "random (default: the model's own default)")
    parser.add_argument("--labels", default=None,
                        help="class names: a JSON list or one per line (default: ImageNet's for "
                             "1000 classes, the class_names.json beside a .keras model)")
    parser.add_argument("--precision", default="float32",
                        help="float32 (default), float16, dynamic (dynamic-range int8 weights) or int8")
    parser.add_argument("--calibration", default=None,
                        help="int8 calibration (and --check) images: DIR (flat or class "
                             "subfolders; an unreadable image stops the export, named) or tfds:NAME")
    parser.add_argument("--num-calibration", type=int, default=100)
    parser.add_argument("--full-int8", dest="float_fallback", action="store_false",
                        help="int8: quantize every op, also those the CPU delegate (XNNPACK) "
                             "has no int8 kernel for (default: those stay float, faster on "
                             "phone CPUs); for NPU delegates that need a fully int8 graph")
    parser.add_argument("--input-size", type=int, default=224,
                        help="square input side of a named model (16-1024)")
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
    parser.add_argument("--raw-heads", action="store_true",
                        help="a saved detector (RetinaNetObjectDetector): write its heads' raw "
                             "outputs, decoded by the app (keras_pf.hub.mobile.decode_detections "
                             "with the .anchors.npy written beside), instead of keras-hub's box "
                             "decoding and NMS inside the file (default)")
    parser.add_argument("--no-metadata", dest="metadata", action="store_false",
                        help="write no TFLite metadata (labels then only in the .labels.txt)")
    parser.add_argument("--format", default="litert",
                        choices=("litert", "onnx", "openvino", "saved_model"),
                        help="litert: a mobile .tflite file (default); onnx: a .onnx file "
                             "(ONNX Runtime; pip install 'keras_pf[onnx]'); openvino: .xml + "
                             ".bin (pip install 'keras_pf[openvino]'); saved_model: a "
                             "TensorFlow SavedModel folder. The last three are float32 "
                             "with a variable batch")
    parser.add_argument("-o", "--output", required=True,
                        help="the file to write: .tflite, .onnx, .xml, or a folder for saved_model")
    parser.add_argument("--check", action="store_true",
                        help="compare the file, run in its own runtime, with the Keras model "
                             "and print a table")


def run(args):
    import numpy as np

    from keras_pf.mobile import tasks
    from keras_pf.mobile.calibration import calibration_images
    from keras_pf.mobile.check import format_check
    from keras_pf.mobile.export import CHECK_IMAGES, PRECISIONS, check_export_arguments, split_held_out
    from keras_pf.mobile.labels import labels_path, read_labels
    from keras_pf.models import resolve

    one_of("--precision", args.precision, PRECISIONS)
    saved = resolve.is_model_file(args.model)
    resolve.check_name(args.model, files=True)
    if args.uint8_input and not args.include_preprocessing:
        raise ValueError("--uint8-input feeds raw pixels: drop --no-include-preprocessing")
    fmt = getattr(args, "format", "litert")
    if fmt != "litert":  # keras_pf.export: ONNX, OpenVINO, SavedModel
        _server_arguments(args, None if saved else (args.input_size,) * 2)
    else:
        check_export_arguments(args.output, args.precision, args.num_calibration,
                               None if saved else (args.input_size,) * 2)
    labels = read_labels(args.labels) if args.labels else None
    if saved:
        if args.weights is not None or args.logits:
            raise ValueError("--weights and --logits apply to named models; a .keras file "
                             "carries its own weights and head")
        model, beside = resolve.load_model_file(args.model)
        labels = labels if labels is not None else beside
        size = tuple(model.input_shape[1:3])
    else:
        kwargs = {"input_shape": (args.input_size, args.input_size, 3)}
        if args.logits:
            kwargs["classifier_activation"] = None
        if args.weights is not None:
            kwargs["weights"] = None if args.weights.lower() == "none" else args.weights
        model = resolve.constructor(args.model)(**kwargs)
        size = (args.input_size,) * 2
    input_dtype = "uint8" if args.uint8_input else "float32"
    # a saved keras-hub segmenter or detector goes through its own export (keras_pf.mobile.tasks)
    kind = tasks.model_kind(model) if saved else "classifier"
    raw_heads = getattr(args, "raw_heads", False)
    tasks.check_kind_arguments(kind, args.model, args.include_preprocessing, raw_heads,
                               tflite=fmt == "litert")
    if fmt != "litert":
        return _run_server_export(args, model, labels, size, input_dtype)
    images = held_out = None
    if args.calibration is not None:
        extra = CHECK_IMAGES if args.check else 0
        images, note = calibration_images(args.calibration, size, args.include_preprocessing,
                                          args.num_calibration + extra)
        print(f"calibration/check images: {note}")
        if args.check:
            images, held_out = split_held_out(images, CHECK_IMAGES)
    path = tasks.export_file(model, args.output, kind, args.precision, calibration=images,
                             labels=labels, num_calibration=args.num_calibration,
                             input_dtype=input_dtype, float_fallback=args.float_fallback,
                             metadata=args.metadata, include_preprocessing=args.include_preprocessing,
                             postprocess=not raw_heads)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    if os.path.exists(labels_path(path)):
        print(f"wrote {labels_path(path)}")
    if kind == "detector":
        from keras_pf.hub.mobile import anchors_path

        print(f"wrote {anchors_path(path)}")
    if args.check:
        check_images = held_out if held_out is not None else images
        if held_out is not None:
            print(f"check images: {len(held_out)} images held out from the "
                  f"{len(images)} calibration images")
        elif check_images is not None:
            print("check images: the only calibration image (too few images to hold some out)")
        if check_images is None:
            print(f"check images: {tasks.RANDOM_CHECK_IMAGES} uniform random images (pass "
                  "--calibration DIR to check on real images)")
            check_images = tasks.random_check_images(size, args.include_preprocessing)
        if args.uint8_input:
            check_images = np.clip(np.round(check_images), 0, 255).astype("uint8")
        reports = tasks.check_with_reference(model, path, check_images, kind, args.precision,
                                             args.include_preprocessing, input_dtype, labels,
                                             postprocess=not raw_heads)
        print(format_check(reports))
        if reports[-1]["dynamic_ops"]:
            raise ValueError(f"the file has dynamic-shape/Flex ops: {reports[-1]['dynamic_ops']}")


# ------------------------------------------------- --format onnx|openvino|saved_model


def _server_arguments(args, image_size):
    """Raise ValueError for arguments a non-LiteRT export cannot honour, before any work:
    a runtime that is not installed (naming the pip extra), a LiteRT-only option, a wrong
    output suffix, an input size out of range."""
    from keras_pf.export import check_output, require
    from keras_pf.export.common import RUNTIMES
    from keras_pf.mobile.export import MAX_INPUT_SIDE, MIN_INPUT_SIDE

    fmt, title = args.format, RUNTIMES[args.format][2]
    require(fmt)
    if args.precision != "float32":
        raise ValueError(f"--precision {args.precision} is for --format litert; {title} files "
                         "are float32 (drop --precision)")
    for given, flag in ((not args.metadata, "--no-metadata"), (not args.float_fallback, "--full-int8")):
        if given:
            raise ValueError(f"{flag} is for --format litert; drop it for --format {fmt}")
    check_output(args.output, fmt)
    for side in image_size or ():
        if not MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE:
            raise ValueError(f"Input size {tuple(image_size)} is outside [{MIN_INPUT_SIDE}, "
                             f"{MAX_INPUT_SIDE}] pixels per side; use e.g. --input-size 224.")


# --check of the server formats compares on this many images of --calibration (else random ones)
SERVER_CHECK_IMAGES = 32


def _run_server_export(args, model, labels, size, input_dtype):
    import numpy as np

    from keras_pf.export import SUFFIXES, TOLERANCE, check_model, export_model, labels_path
    from keras_pf.export.common import RUNTIMES, format_reports, size_bytes
    from keras_pf.mobile import tasks
    from keras_pf.mobile.calibration import calibration_images

    fmt, title = args.format, RUNTIMES[args.format][2]
    path = export_model(model, args.output, fmt, include_preprocessing=args.include_preprocessing,
                        input_dtype=input_dtype, labels=labels)
    shown = path + (" + .bin" if fmt == "openvino" else "") + ("/" if not SUFFIXES[fmt] else "")
    print(f"wrote {shown} ({size_bytes(path) / 1e6:.2f} MB)")
    if os.path.exists(labels_path(path, fmt)):
        print(f"wrote {labels_path(path, fmt)}")
    if not args.check:
        return 0
    if args.calibration is not None:
        images, note = calibration_images(args.calibration, size, args.include_preprocessing,
                                          SERVER_CHECK_IMAGES)
        print(f"check images: {note}")
    else:
        print(f"check images: {tasks.RANDOM_CHECK_IMAGES} uniform random images (pass "
              "--calibration DIR to check on real images)")
        images = tasks.random_check_images(size, args.include_preprocessing)
    if input_dtype == "uint8":
        images = np.clip(np.round(images), 0, 255).astype("uint8")
    report = check_model(model, path, images, fmt, args.include_preprocessing)
    print(format_reports([report]))
    if not report["matches"]:
        raise ValueError(f"the {title} file differs from Keras by {report['relative_diff']:.1e} "
                         f"of the output scale (more than {TOLERANCE:g}); report it with the "
                         "model and the command")
    return 0
