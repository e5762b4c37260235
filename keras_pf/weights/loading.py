"""Loading weights into a model: `weights=` of every constructor, a registry tag (through
the cache), a Keras weights file, or an original PyTorch checkpoint (converted)."""

import os

from keras_pf.weights.convert import load_torch_weights
from keras_pf.weights.keras_file import KERAS_SUFFIXES, TORCH_SUFFIXES, load_keras_weights


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
    return load_tagged_weights(model, weights_id, path)


def load_tagged_weights(model, weights_id, tag):
    """Load the weights tagged `tag` into `model`: from the cache, else from the mirror,
    else from the original checkpoint (downloaded, converted once, cached)."""
    from keras_pf.weights import cache

    path = cache.fetch(weights_id, tag)
    try:
        load_keras_weights(model, path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"The cached weights {path} do not load into model '{model.name}' ({error}). "
            f"Check them with `keras-pf weights verify {weights_id}`; delete the file to "
            "download it again."
        ) from error
    cache.record_if_unrecorded(path)
    return model
