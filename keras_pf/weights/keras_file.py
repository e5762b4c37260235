"""Which files keras_pf reads as weights (one suffix table), and loading a Keras weights
file strictly: Keras only warns when a file lacks some of a model's weights."""

import os

# original PyTorch checkpoints (read by `torch_reader`, converted by `convert`)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")
# Keras' own files
KERAS_SUFFIXES = (".h5", ".keras")
WEIGHTS_FILE_SUFFIXES = TORCH_SUFFIXES + KERAS_SUFFIXES


def _h5_layout(path):
    from keras_pf.weights.safe_load import weights_layout  # (a .keras: the weights inside)

    return weights_layout(path)


def load_keras_weights(model, path):
    """`model.load_weights(path)`, but strict: Keras only warns when a file lacks some of
    the model's weights (leaving them random); here that, or any shape mismatch, raises.
    A file with a classifier loads into an `include_top=False` model, as in
    keras.applications. Position embeddings may differ in grid size (resized on load).
    A `.keras` archive's config is checked too (`safe_load`), and a file's integrity
    record, if it has one; every failure is one line naming the file."""
    from keras_pf.weights import safe_load

    if str(path).endswith(".keras"):
        safe_load.check_keras_file(path)  # a hostile config is refused, even unused
    elif str(path).endswith(".weights.h5"):
        safe_load.check_weights_file(path)
    else:
        return safe_load.load_weights(model, path)  # legacy .h5: Keras' own checks
    from keras_pf import tempfiles

    with tempfiles.private_dir("reference-") as tmp:
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
