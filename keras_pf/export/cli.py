"""`keras-pf export --format onnx|openvino|saved_model`: the arguments `keras-pf export`
(`keras_pf.mobile.export.run_export`) hands over once the model is built."""

import os

import numpy as np

from keras_pf.export import SUFFIXES, TOLERANCE, check_model, check_output, export_model
from keras_pf.export import labels_path, require
from keras_pf.export.common import RUNTIMES, format_reports, size_bytes


def server_arguments(args, image_size):
    """Raise ValueError for arguments a non-LiteRT export cannot honour, before any work:
    a runtime that is not installed (naming the pip extra), a LiteRT-only option, a wrong
    output suffix, an input size out of range."""
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


# --check compares on this many images of --calibration (else random ones)
CHECK_IMAGES = 32


def run_server_export(args, model, labels, size, input_dtype):
    from keras_pf.imagenet import preprocess_input
    from keras_pf.mobile.export import calibration_images

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
                                          CHECK_IMAGES)
        print(f"check images: {note}")
    else:
        print("check images: 16 uniform random images (pass --calibration DIR to check on "
              "real images)")
        pixels = np.random.default_rng(0).uniform(0, 255, (16, *size, 3)).astype("float32")
        images = pixels if args.include_preprocessing else preprocess_input(pixels)
    if input_dtype == "uint8":
        images = np.clip(np.round(images), 0, 255).astype("uint8")
    report = check_model(model, path, images, fmt, args.include_preprocessing)
    print(format_reports([report]))
    if not report["matches"]:
        raise ValueError(f"the {title} file differs from Keras by {report['relative_diff']:.1e} "
                         f"of the output scale (more than {TOLERANCE:g}); report it with the "
                         "model and the command")
    return 0
