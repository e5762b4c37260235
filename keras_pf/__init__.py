"""keras_pf: the networks of "Learning Features with Parameter-Free Layers" (Han et al.,
ICLR 2022) for Keras 3, with the original ImageNet checkpoints.

The public names are imported on first use (PEP 562). `import keras_pf` still imports
`keras_pf.layers`, so that `keras.saving.load_model` finds the package's layers in a saved
`.keras` model (as after `import keras_hub`), except when the `keras-pf` command imports
the package to parse its arguments: its `--help` imports no Keras or TensorFlow, and the
command registers the layers itself before a subcommand runs."""

import importlib
import os
import sys

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "decode_predictions": "keras_pf.imagenet",
    "preprocess_input": "keras_pf.imagenet",
    "fold_batchnorm": "keras_pf.inference",
    "PFPiT": "keras_pf.pf_pit",
    "PFPiTBase": "keras_pf.pf_pit",
    "PFPiTSmall": "keras_pf.pf_pit",
    "PFPiTTiny": "keras_pf.pf_pit",
    "PFResNet": "keras_pf.pf_resnet",
    "PFResNet50": "keras_pf.pf_resnet",
    "PFResNet50Hybrid": "keras_pf.pf_resnet",
    "PFResNet50Max": "keras_pf.pf_resnet",
    "PFResNet50Plain": "keras_pf.pf_resnet",
    "PFViT": "keras_pf.pf_vit",
    "PFViTBase": "keras_pf.pf_vit",
    "PFViTSmall": "keras_pf.pf_vit",
    "PFViTTiny": "keras_pf.pf_vit",
    "feature_layers": "keras_pf.transfer",
    "feature_pyramid": "keras_pf.transfer",
    "freeze_backbone": "keras_pf.transfer",
    "set_backbone_trainable": "keras_pf.transfer",
    "load_torch_weights": "keras_pf.weights",
}

# Every named constructor by name (`keras_pf.MODELS`): the CLI, the tools and the tests read this.
MODEL_NAMES = ("PFResNet50", "PFResNet50Hybrid", "PFResNet50Max", "PFResNet50Plain", "PFViTTiny",
               "PFViTSmall", "PFViTBase", "PFPiTTiny", "PFPiTSmall", "PFPiTBase")


def __getattr__(name):
    if name == "MODELS":
        value = {model: __getattr__(model) for model in MODEL_NAMES}
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'keras_pf' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS) + ["MODELS"])


__all__ = [*_EXPORTS, "MODELS"]


def _parsing_command_line():
    """Whether this import comes from the `keras-pf` script or `python -m keras_pf.cli`
    (while the parent package of a `-m` module is imported, sys.argv[0] is "-m")."""
    argv = getattr(sys, "argv", None) or [""]  # embedded interpreters may have none
    return os.path.basename(argv[0]) == "keras-pf" or argv[:1] == ["-m"]


if not _parsing_command_line():
    importlib.import_module("keras_pf.layers")  # registers the custom layers with Keras
