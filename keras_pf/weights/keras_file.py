"""Which files keras_pf reads as weights (one suffix table), and loading a Keras weights
file strictly: Keras only warns when a file lacks some of a model's weights."""

import os
import tempfile

# original PyTorch checkpoints (read by `torch_reader`, converted by `convert`)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")
# Keras' own files
KERAS_SUFFIXES = (".h5", ".keras")
WEIGHTS_FILE_SUFFIXES = TORCH_SUFFIXES + KERAS_SUFFIXES


def _h5_layout(path):
    import h5py

    layout = {}
    try:
        f = h5py.File(path, "r")
    except OSError as error:  # h5py's message does not name the file
        raise ValueError(
            f"{path} is not a readable HDF5 weights file: it is truncated or corrupt ({error}); "
            "write or download it again"
        ) from error
    with f:
        f.visititems(lambda name, obj: layout.__setitem__(name, obj.shape)
                     if isinstance(obj, h5py.Dataset) else None)
    return layout


def load_keras_weights(model, path):
    """`model.load_weights(path)`, but strict: Keras only warns when a file lacks some of
    the model's weights (leaving them random); here that, or any shape mismatch, raises.
    A file with a classifier loads into an `include_top=False` model, as in
    keras.applications. Position embeddings may differ in grid size (resized on load)."""
    if not str(path).endswith(".weights.h5"):
        return model.load_weights(path)  # .keras archives: Keras checks them itself
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "reference.weights.h5")
        model.save_weights(reference)
        expected = _h5_layout(reference)
    found = _h5_layout(path)
    problems = [f"missing `{k}` {v}" for k, v in expected.items() if k not in found]
    problems += [
        f"`{k}` has shape {found[k]}, the model {v}" for k, v in expected.items()
        if k in found and found[k] != v and "position_embedding" not in k
    ]
    extra = [k for k in found if k not in expected]
    has_head = any(layer.name == "predictions" for layer in model.layers)
    if extra and (has_head or not all(k.split("/")[1].startswith("dense") for k in extra)):
        problems += [f"unexpected `{k}`" for k in extra]
    if problems:
        raise ValueError(
            f"Weights file {path} does not fit model '{model.name}': "
            + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
            + ". It was saved from another architecture or configuration; build the model "
            "with the same arguments as the one that saved it."
        )
    return model.load_weights(path)
