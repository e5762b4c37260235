"""Weights: the registry of published checkpoints (`registry`, a leaf, its table in
`manifest.json`), the local cache (`cache`), download transport (`download`), loading into
a model (`loading`, `keras_file`), conversion of original checkpoints (`convert`) and
their pickle-free reader (`torch_reader`).

A new weights source: a `registry.register_weights` call (or a manifest entry);
a new checkpoint layout: `convert`."""

import importlib

# public name -> the module that defines it; imported on first use (PEP 562), so that
# importing one module of this package (the registry, say) imports no other
_EXPORTS = {
    "CheckpointError": "torch_reader",
    "KERAS_SUFFIXES": "keras_file",
    "TORCH_SUFFIXES": "keras_file",
    "UnsafeCheckpointError": "torch_reader",
    "WeightMappingError": "convert",
    "WeightsDownloadError": "download",
    "load_state_dict": "torch_reader",
    "load_keras_weights": "keras_file",
    "load_torch_weights": "convert",
    "load_weights": "loading",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_pf.weights' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keras_pf.weights.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CheckpointError",
    "KERAS_SUFFIXES",
    "TORCH_SUFFIXES",
    "UnsafeCheckpointError",
    "WeightMappingError",
    "WeightsDownloadError",
    "load_state_dict",
    "load_keras_weights",
    "load_torch_weights",
    "load_weights",
]
