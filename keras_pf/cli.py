"""The `keras-pf` command. Each subcommand lives in the module that owns its concern;
that module defines `add_<command>_arguments(parser)` and `run_<command>(args)`, and is
imported only when its subcommand runs, so `keras-pf --help` stays fast.

Arguments are checked by the parser (the `type=` helpers below): a bad value is one
line and exit status 2. TensorFlow's native start-up logs are silenced unless
`--verbose` is given."""

import argparse
import importlib
import math
import os
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
    "hub-preset": ("keras_pf.hub_preset", "write a model as a keras-hub preset folder (backbone, classifier, preprocessor)"),
}


# --- argument types: each raises ArgumentTypeError, which argparse prints as one line --

def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind, accept, rule):
    """An argparse `type=`: a `kind` number for which `accept(value)` holds."""
    def parse(text):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


positive_int = _bounded(int, lambda v: v > 0, "at least 1")
non_negative_int = _bounded(int, lambda v: v >= 0, "0 or more")
positive_float = _bounded(float, lambda v: v > 0, "greater than 0")
non_negative_float = _bounded(float, lambda v: v >= 0, "0 or more")
unit_interval = _bounded(float, lambda v: 0 < v <= 1, "in (0, 1]")  # a fraction, e.g. a crop ratio
probability = _bounded(float, lambda v: 0 <= v < 1, "in [0, 1)")  # a rate, e.g. dropout


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- quiet TensorFlow ----------------------------------------------------------------

def silence_tensorflow():
    """Keep TensorFlow's native logs (CUDA probing, the cuInit 'error' on machines
    without a GPU, oneDNN notices) off the terminal: TF_CPP_MIN_LOG_LEVEL must be set
    before TensorFlow is imported, and a few lines come before its logging is set up,
    so stderr is closed while it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        pass  # reported, with its message, where it is used
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)


def main(argv=None):
    parser = Parser(prog="keras-pf", description="The networks of \"Learning Features with "
                    "Parameter-Free Layers\" for Keras 3: weights, fine-tuning, Grad-CAM, export, benchmark.")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, description=help_text)
    argv = sys.argv[1:] if argv is None else list(argv)
    # Parse the subcommand name first, then let its module add its own arguments.
    verbose = argv[:1] == ["--verbose"]
    command_argv = argv[1:] if verbose else argv
    known, _ = parser.parse_known_args(command_argv[:1])  # none: the usage error
    wants_help = any(a in ("-h", "--help") for a in command_argv[1:])
    if not verbose and not wants_help:
        silence_tensorflow()
    module = importlib.import_module(COMMANDS[known.command][0])
    sub = subparsers.choices[known.command]
    function_name = known.command.replace("-", "_")  # hub-preset: add_hub_preset_arguments
    getattr(module, f"add_{function_name}_arguments")(sub)
    args = parser.parse_args(argv)
    run = getattr(module, f"run_{function_name}")
    importlib.import_module("keras_pf.layers")  # custom layers registered for saved .keras models
    try:
        return run(args) or 0
    except (ValueError, OSError) as error:  # user-facing failures: message, no traceback
        print(f"keras-pf {known.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
