"""Weights: reading original checkpoints, converting them, and resolving weight tags."""

import os
import tempfile

from keras_pf.weights.convert import WeightMappingError, load_torch_weights
from keras_pf.weights.download import WeightsDownloadError
from keras_pf.weights.torch_reader import CheckpointError, UnsafeCheckpointError, load_state_dict

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")
KERAS_SUFFIXES = (".h5", ".keras")


def load_weights(model, weights, weights_id=None):
    """Load `weights` into `model`: a registry tag ("imagenet", ...), a Keras weights
    file, or an original PyTorch checkpoint. Any failure raises; nothing is skipped."""
    path = os.fspath(weights)
    if os.path.exists(path):
        if path.endswith(TORCH_SUFFIXES):
            return load_torch_weights(model, path)
        if not path.endswith(KERAS_SUFFIXES):
            raise ValueError(
                f"{path}: not a weights file kind keras_pf reads; use a Keras weights file "
                f"(.weights.h5), a .keras archive, or an original PyTorch checkpoint "
                f"({', '.join(TORCH_SUFFIXES)})"
            )
        return load_keras_weights(model, path)
    from keras_pf.weights import registry

    return registry.load_tagged_weights(model, weights_id, path)


def _h5_layout(path):
    from keras_pf.safe_load import weights_layout  # (a .keras archive: the weights inside)

    return weights_layout(path)


def load_keras_weights(model, path):
    """`model.load_weights(path)`, but strict: Keras only warns when a file lacks some of
    the model's weights (leaving them random); here that, or any shape mismatch, raises.
    A file with a classifier loads into an `include_top=False` model, as in
    keras.applications. Position embeddings may differ in grid size (resized on load).
    A `.keras` archive's config is checked too (`keras_pf.safe_load`), and a file's
    integrity sidecar, if it has one; every failure is one line naming the file."""
    from keras_pf import safe_load

    if str(path).endswith(".keras"):
        safe_load.check_keras_file(path)  # a hostile config is refused, even unused
    elif str(path).endswith(".weights.h5"):
        safe_load.check_weights_file(path)
    else:
        return safe_load.load_weights(model, path)  # legacy .h5: Keras' own checks
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "reference.weights.h5")
        model.save_weights(reference)
        expected = _h5_layout(reference)
    found = _h5_layout(path)
    problems = safe_load.layout_problems(expected, found, model)
    if problems:
        raise safe_load.ModelFileError(
            f"Weights file {path} does not fit model '{model.name}': "
            + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
            + ". It was saved from another architecture or configuration; build the model "
            "with the same arguments as the one that saved it."
        )
    return safe_load.load_weights(model, path)


__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "WeightMappingError",
    "WeightsDownloadError",
    "load_state_dict",
    "load_keras_weights",
    "load_torch_weights",
    "load_weights",
]
