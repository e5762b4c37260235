"""The `keras-pf` command. Each subcommand lives in the module that owns its concern;
that module defines `add_<command>_arguments(parser)` and `run_<command>(args)`, and is
imported only when its subcommand runs, so `keras-pf --help` stays fast."""

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("keras_pf.demo", "build PF-ResNet50, classify a sample image, compare with ResNet50"),
    "convert": ("keras_pf.weights.cli", "convert an original .pth checkpoint to .weights.h5"),
    "benchmark": ("keras_pf.benchmark", "latency, size and FLOPs side by side with keras.applications ResNet50"),
    "finetune": ("keras_pf.finetune", "fine-tune a model on an image folder or tfds:NAME (tf.distribute-ready)"),
    "gradcam": ("keras_pf.gradcam", "write a Grad-CAM heat map of the top class over an image as PNG"),
    "weights": ("keras_pf.weights.cli", "list, download, import or verify published weights"),
    "export": ("keras_pf.mobile.export", "export a model to a mobile .tflite file (float32/float16/dynamic/int8)"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-pf", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, description=help_text)
    argv = sys.argv[1:] if argv is None else list(argv)
    # Parse the subcommand name first, then let its module add its own arguments.
    known, _ = parser.parse_known_args(argv[:1] or ["--help"])
    module = importlib.import_module(COMMANDS[known.command][0])
    sub = subparsers.choices[known.command]
    getattr(module, f"add_{known.command}_arguments")(sub)
    args = parser.parse_args(argv)
    run = getattr(module, f"run_{known.command}")
    try:
        return run(args) or 0
    except (ValueError, OSError) as error:  # user-facing failures: message, no traceback
        print(f"keras-pf {known.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
