"""Weights: reading original checkpoints, converting them, and resolving weight tags."""

import os

from keras_pf.weights.convert import WeightMappingError, load_torch_weights
from keras_pf.weights.torch_reader import CheckpointError, UnsafeCheckpointError, load_state_dict

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")


def load_weights(model, weights, weights_id=None):
    """Load `weights` into `model`: a registry tag ("imagenet", ...), a Keras weights
    file, or an original PyTorch checkpoint. Any failure raises; nothing is skipped."""
    path = os.fspath(weights)
    if os.path.exists(path):
        if path.endswith(TORCH_SUFFIXES):
            return load_torch_weights(model, path)
        return model.load_weights(path)
    from keras_pf.weights import registry

    return registry.load_tagged_weights(model, weights_id, path)


__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "WeightMappingError",
    "load_state_dict",
    "load_torch_weights",
    "load_weights",
]
