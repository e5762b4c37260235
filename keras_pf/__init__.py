"""keras_pf: the networks of "Learning Features with Parameter-Free Layers" (Han et al.,
ICLR 2022) for Keras 3, with the original ImageNet checkpoints.

Where things live:
- `models/`: the three families (`pf_resnet`, `pf_vit`, `pf_pit`), their shared
  keras.applications conventions (`application`), the parameter-free and custom layers
  (`layers`), ImageNet pre/post-processing, transfer learning, Grad-CAM, and the one
  model resolver (`resolve`: names, generic builders, `.keras` files).
- `weights/`: the registry (a leaf; its table is `manifest.json`), the cache, download
  transport, loading, conversion of original checkpoints and their pickle-free reader.
- `training/`: tf.data pipelines, fine-tuning, tf.distribute.
- `mobile/`: TFLite export per precision, the converter, calibration, labels,
  post-training int8, QAT, graph rewrites, checks, metadata.
- `benchmark/`: `keras-pf benchmark` (its LiteRT timing child is a module of its own).
- `_compat/`: every private TensorFlow/Keras API, each with a test.
The command line is the package `keras_pf_cli`, beside this one.

The public names are imported on first use (PEP 562). `import keras_pf` always imports
`keras_pf.models.layers`, so that `keras.saving.load_model` finds the package's layers in
a saved `.keras` model (as after `import keras_hub`)."""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "decode_predictions": "keras_pf.models.imagenet",
    "preprocess_input": "keras_pf.models.imagenet",
    "fold_batchnorm": "keras_pf.models.inference",
    "PFPiT": "keras_pf.models.pf_pit",
    "PFPiTBase": "keras_pf.models.pf_pit",
    "PFPiTSmall": "keras_pf.models.pf_pit",
    "PFPiTTiny": "keras_pf.models.pf_pit",
    "PFResNet": "keras_pf.models.pf_resnet",
    "PFResNet50": "keras_pf.models.pf_resnet",
    "PFResNet50Hybrid": "keras_pf.models.pf_resnet",
    "PFResNet50Max": "keras_pf.models.pf_resnet",
    "PFResNet50Plain": "keras_pf.models.pf_resnet",
    "PFViT": "keras_pf.models.pf_vit",
    "PFViTBase": "keras_pf.models.pf_vit",
    "PFViTSmall": "keras_pf.models.pf_vit",
    "PFViTTiny": "keras_pf.models.pf_vit",
    "feature_layers": "keras_pf.models.transfer",
    "feature_pyramid": "keras_pf.models.transfer",
    "freeze_backbone": "keras_pf.models.transfer",
    "set_backbone_trainable": "keras_pf.models.transfer",
    "load_torch_weights": "keras_pf.weights",
}

# Every named constructor by name (`keras_pf.MODELS`); the resolver holds the list.
from keras_pf.models.resolve import MODEL_NAMES  # noqa: E402


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


importlib.import_module("keras_pf.models.layers")  # registers the custom layers with Keras
