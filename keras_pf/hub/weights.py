"""Weights of keras_pf presets: strict loading, and pointer files into keras_pf's
weights registry.

A keras-hub preset folder holds its weights in `model.weights.h5` (the backbone) and
`task.weights.h5` (a task's head). The named presets keras_pf ships (`pf_resnet50_hybrid_imagenet`,
...) hold *pointers* there instead: small HDF5 files with no tensors and one attribute,
`keras_pf_weights`, naming a registry entry (`{"weights_id": ..., "tag": ...}`). Loading
one resolves it as `keras_pf.PFResNet50(weights=...)` does (the cache, the
`KERAS_PF_WEIGHTS_URL` mirror, the original checkpoint downloaded and converted once,
with the same errors), so a preset costs a few kilobytes in the package and nothing is
downloaded until weights are asked for: `from_preset(name, load_weights=False)` never
touches the network. A pointer whose `weights_id` is null marks an architecture-only
preset (a named model the paper published no weights for).

Every weights file is loaded strictly (`keras_pf.weights.load_keras_weights`): a file
that lacks a weight of the model or holds one of another shape is an error naming the
file, where Keras alone would only warn and leave the weights random.
"""

import contextlib
import contextvars
import json
import os

POINTER_ATTRIBUTE = "keras_pf_weights"

_loading = contextvars.ContextVar("keras_pf_hub_loading", default=False)


class PresetError(ValueError):
    """A preset (folder or name) that cannot be loaded: one line naming it and why."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


def write_pointer(path, weights_id, tag, model):
    """Write the pointer file `path` to registry entry `weights_id`/`tag` (`weights_id`
    None: architecture-only), `model` the keras_pf constructor it belongs to."""
    import h5py

    record = {"weights_id": weights_id, "tag": tag, "model": model}
    with h5py.File(path, "w") as f:
        f.attrs[POINTER_ATTRIBUTE] = json.dumps(record, sort_keys=True)


def read_pointer(path):
    """The record of pointer file `path`, or None when `path` is not a pointer (a real
    weights file, or not HDF5 at all: the loader that reads it next reports that)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(POINTER_ATTRIBUTE)
    except (OSError, ValueError):
        return None
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not {"weights_id", "tag"} <= set(record) \
            or not isinstance(record["weights_id"], (str, type(None))) \
            or not isinstance(record["tag"], (str, type(None))):
        raise PresetError(f"{path}: a keras_pf weights pointer whose record is not "
                          f"{{'weights_id': ..., 'tag': ...}} (got {text!r}); write the preset again")
    return record


def resolve_pointer(record, path):
    """The cached converted weights file `record` points to (fetched if needed)."""
    from keras_pf.weights import cache, registry

    folder = os.path.dirname(os.path.abspath(path))
    if record["weights_id"] is None:
        raise PresetError(
            f"{folder} is an architecture-only preset ({record.get('model') or 'a keras_pf model'}: "
            "the paper published no weights for it); load it with load_weights=False for "
            "random weights, or write a preset with weights: keras-pf hub-preset MODEL -o DIR --weights FILE"
        )
    try:
        registry.resolve(record["weights_id"], record["tag"])
    except registry.UnknownWeightsError as error:
        raise PresetError(f"{path} points to weights the registry does not have: {error}") from None
    return cache.fetch(record["weights_id"], record["tag"])


@contextlib.contextmanager
def _strict():
    token = _loading.set(True)
    try:
        yield
    finally:
        _loading.reset(token)


def loading_strictly():
    """Whether a strict load is under way (the model's own `load_weights` then defers
    to Keras')."""
    return _loading.get()


def load_backbone_weights(backbone, filepath):
    """`backbone.load_weights(filepath)` for a keras_pf backbone: resolve a pointer,
    then load strictly (the position embedding resized to the backbone's grid)."""
    from keras_pf.weights import load_keras_weights

    filepath = os.fspath(filepath)
    record = read_pointer(filepath) if os.path.isfile(filepath) else None
    source = resolve_pointer(record, filepath) if record else filepath
    if not os.path.exists(source):
        raise PresetError(f"weights file not found: {source}")
    with _strict():
        load_keras_weights(backbone, source)


def reference_classifier(record, path):
    """The keras_pf classifier `record` points to, with its weights (for the head)."""
    from keras_pf.models.resolve import weights_architecture
    from keras_pf.weights import load_keras_weights

    source = resolve_pointer(record, path)
    model = weights_architecture(record["weights_id"], classifier_activation=None)
    load_keras_weights(model, source)
    return model


def load_classifier_head(task, filepath, default):
    """`task.load_task_weights(filepath)`: a pointer loads the head of the keras_pf
    classifier it points to into `task.output_dense`; a real file goes to keras-hub's
    loader (`default`), its failures naming the file."""
    filepath = os.fspath(filepath)
    record = read_pointer(filepath) if os.path.isfile(filepath) else None
    if record is None:
        try:
            return default(filepath)
        except (ValueError, KeyError, OSError) as error:
            raise PresetError(f"task weights {filepath} do not load into {task.name}: {error}") from error
    head = reference_classifier(record, filepath).get_layer("predictions")
    kernel, bias = head.get_weights()
    if tuple(task.output_dense.kernel.shape) != kernel.shape:
        raise PresetError(
            f"{filepath}: the weights it points to have a {kernel.shape[-1]}-class head; the "
            f"task has {task.output_dense.kernel.shape[-1]} classes (pass num_classes to "
            "from_preset for a new, randomly initialized head)"
        )
    task.output_dense.set_weights([kernel, bias])
