"""The `keras-pf` command: one module per subcommand, each with `add_arguments(parser)`
and `run(args)`, thin over library functions. It is a package of its own, beside
`keras_pf`, because `import keras_pf` imports Keras (it registers the package's layers):
parsing arguments and `--help` import no keras_pf module, no Keras and no TensorFlow.
A subcommand imports the library when it runs; vocabularies such as `--precision` are
checked then, against the library's own tables (`args.one_of`), with argparse's wording.

A bad value is one line and exit status 2. TensorFlow's native start-up logs are
silenced unless `--verbose` is given."""

import importlib
import sys

from keras_pf_cli.args import Parser, UsageError, silence_tensorflow

# subcommand -> (module of this package, one-line help)
COMMANDS = {
    "demo": ("demo", "build PF-ResNet50, classify a sample image, compare with ResNet50"),
    "convert": ("convert", "convert an original .pth checkpoint to .weights.h5"),
    "benchmark": ("benchmark", "latency, size and FLOPs side by side with keras.applications ResNet50"),
    "finetune": ("finetune", "fine-tune a model on an image folder or tfds:NAME (tf.distribute-ready)"),
    "gradcam": ("gradcam", "write a Grad-CAM heat map of the top class over an image as PNG"),
    "weights": ("weights", "list, download, import or verify published weights; hash your own"),
    "export": ("export", "export a model: .tflite (float32/float16/dynamic/int8), ONNX, OpenVINO or SavedModel"),
    "hub-preset": ("hub_preset", "write a model as a keras-hub preset folder (backbone, classifier, preprocessor)"),
}


def _remove_dead_temporaries():
    """Every run removes the temporary folders of killed keras_pf processes."""
    from keras_pf import tempfiles

    try:
        tempfiles.remove_dead()
    except OSError:
        pass  # an unusable $TMPDIR: the command says so if it needs one


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
    module = importlib.import_module(f"keras_pf_cli.{COMMANDS[known.command][0]}")
    sub = subparsers.choices[known.command]
    module.add_arguments(sub)
    args = parser.parse_args(argv)
    importlib.import_module("keras_pf")  # registers the layers saved .keras models use
    _remove_dead_temporaries()
    try:
        return module.run(args) or 0
    except UsageError as error:
        sub.error(str(error))
    except (ValueError, OSError) as error:  # user-facing failures: message, no traceback
        print(f"keras-pf {known.command}: error: {error}", file=sys.stderr)
        return 2
