"""A preset is input like a checkpoint: before keras-hub reads a preset folder for a
keras_pf class, check it, and turn any failure into one line naming the folder (or
name) and the problem.

Nothing in a preset is executed: keras-hub deserializes its configs with Keras'
`safe_mode` on (a `Lambda` or a function in a config is refused) and these checks only
read JSON. Weights download errors are keras_pf's own (`WeightsDownloadError`, the same
as `keras_pf.PFResNet50(weights="imagenet")` gives) and pass unchanged.
"""

import contextlib
import json
import os

import keras

from keras_pf._compat import keras_hub as _compat
from keras_pf.hub.weights import PresetError

_REMOTE_SCHEMES = ("kaggle://", "hf://", "gs://", "modelscope://", "s3://", "http://", "https://")


def _family_presets(expected):
    names = sorted(n for n, p in _compat.BUILTIN_PRESETS.items()
                   if p.get("metadata", {}).get("keras_pf_backbone") == getattr(expected, "__name__", None))
    return names or sorted(n for n, p in _compat.BUILTIN_PRESETS.items()
                           if "keras_pf_backbone" in p.get("metadata", {}))


def local_folder(preset, expected=None):
    """The local folder `preset` names (a folder, or a registered name whose preset is
    a local folder); None for a remote handle; PresetError for anything else."""
    if not isinstance(preset, (str, os.PathLike)):
        raise PresetError(f"a preset is a name or a folder path; got {type(preset).__name__} {preset!r}")
    preset = os.fspath(preset)
    if preset in _compat.BUILTIN_PRESETS:
        handle = _compat.BUILTIN_PRESETS[preset].get("kaggle_handle", "")
        return handle if os.path.isdir(handle) else None
    if preset.lower().startswith(_REMOTE_SCHEMES):
        return None
    if os.path.isdir(preset):
        return preset
    if os.path.exists(preset):
        raise PresetError(f"preset {preset} is a file, not a preset folder (config.json, "
                          "model.weights.h5, ...)")
    names = ", ".join(_family_presets(expected)) or "none registered; import keras_pf.hub"
    raise PresetError(
        f"unknown preset {preset!r}: no such folder, and no preset of that name is registered "
        f"(keras_pf presets: {names}); pass a registered name, a preset folder, or an hf:// or "
        "kaggle:// handle"
    )


def read_json(folder, name, required=True):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if required:
            raise PresetError(
                f"preset folder {folder} has no {name}: not a keras-hub preset (write one with "
                "save_to_preset or `keras-pf hub-preset`)"
            )
        return None
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise PresetError(f"{path} is not valid JSON ({error}); the preset is damaged or was "
                          "edited by hand: write it again") from None
    except OSError as error:
        raise PresetError(f"{path} cannot be read: {error.strerror or error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict) \
            or not isinstance(config.get("registered_name", config.get("class_name")), str):
        raise PresetError(f"{path} is not a serialized Keras object (a JSON object with "
                          "'class_name', 'config' and 'registered_name')")
    return config


def registered_class(config, path):
    name = config.get("registered_name") or config.get("class_name")
    cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise PresetError(
            f"{path} names class {name!r}, which no imported package registered with Keras "
            "(import keras_pf.hub for keras_pf presets, or the package the preset comes from); "
            "nothing was loaded"
        )
    return cls


def expected_backbone(cls):
    """The backbone class a preset must hold for `cls` (a backbone, task, preprocessor
    or image converter class)."""
    from keras_hub.models import Backbone

    if isinstance(cls, type) and issubclass(cls, Backbone):
        return cls
    return getattr(cls, "backbone_cls", None)


def check_preset(preset, cls, load_weights=False):
    """Raise PresetError if `preset` cannot give a `cls`; remote handles are left to
    keras-hub (their errors are named by `naming`)."""
    from keras_hub.models import Backbone, Task

    folder = local_folder(preset, expected_backbone(cls))
    if folder is None:
        return
    config_path = os.path.join(folder, _compat.CONFIG_FILE)
    config = read_json(folder, _compat.CONFIG_FILE)
    found = registered_class(config, config_path)
    expected = expected_backbone(cls)
    if expected is not None and not (isinstance(found, type) and issubclass(found, expected)):
        raise PresetError(
            f"preset {folder} holds a {getattr(found, '__name__', found)}, not a "
            f"{expected.__name__}: it is a preset of another model family; load it with "
            f"{getattr(found, '__name__', 'its own class')}.from_preset or "
            "keras_hub.models.Backbone.from_preset"
        )
    is_task = isinstance(cls, type) and issubclass(cls, Task)
    if is_task:
        task = read_json(folder, _compat.TASK_CONFIG_FILE, required=False)
        if task is not None:
            registered_class(task, os.path.join(folder, _compat.TASK_CONFIG_FILE))
    for name in (_compat.PREPROCESSOR_CONFIG_FILE, _compat.IMAGE_CONVERTER_CONFIG_FILE):
        read_json(folder, name, required=False)
    if load_weights and isinstance(cls, type) and (is_task or issubclass(cls, Backbone)):
        weights = os.path.join(folder, _compat.MODEL_WEIGHTS_FILE)
        sharded = os.path.join(folder, _compat.SHARDED_MODEL_WEIGHTS_CONFIG_FILE)
        if not os.path.isfile(weights) and not os.path.isfile(sharded):
            raise PresetError(
                f"preset folder {folder} has no {_compat.MODEL_WEIGHTS_FILE}; pass "
                "load_weights=False for the architecture with random weights"
            )


@contextlib.contextmanager
def naming(preset):
    """Re-raise what keras-hub or Keras raise while loading `preset` as one PresetError
    line naming it. keras_pf's weights download errors pass unchanged."""
    from keras_pf.weights.download import WeightsDownloadError

    try:
        yield
    except (PresetError, WeightsDownloadError):
        raise
    except (ValueError, TypeError, KeyError, OSError) as error:
        text = str(error) if not isinstance(error, KeyError) else f"missing key {error}"
        where = os.fspath(preset) if isinstance(preset, (str, os.PathLike)) else repr(preset)
        raise PresetError(f"preset {where} does not load: {type(error).__name__}: {text}") from error


def checked_from_preset(from_preset, cls, preset, load_weights=None, **kwargs):
    """`from_preset(preset, ...)` (keras-hub's, bound to `cls`) after `check_preset`,
    its failures named."""
    check_preset(preset, cls, load_weights=bool(load_weights))
    if load_weights is not None:
        kwargs["load_weights"] = load_weights
    with naming(preset):
        return from_preset(preset, **kwargs)
