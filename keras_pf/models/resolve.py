"""Turning a model name into a model: the one resolver every command, tool and
benchmark uses, so that an unknown name always gets the same message.

A model reference is
- a named constructor (`MODEL_NAMES`, e.g. "PFResNet50Max"),
- a generic builder (`GENERIC_BUILDERS`) with keyword arguments (`model_args`),
- where a caller allows it, a `keras.applications` baseline (`BASELINES`, the benchmark),
- or a saved `.keras` model file, with the `class_names.json` written beside it by
  `keras-pf finetune`.
"""

import inspect
import json
import os

# Every named constructor (`keras_pf.MODELS`), in the README's order.
MODEL_NAMES = ("PFResNet50", "PFResNet50Hybrid", "PFResNet50Max", "PFResNet50Plain", "PFViTTiny",
               "PFViTSmall", "PFViTBase", "PFPiTTiny", "PFPiTSmall", "PFPiTBase")
# The family builders, which take the original hyper-parameters as `model_args`.
GENERIC_BUILDERS = ("PFResNet", "PFViT", "PFPiT")
# keras.applications constructors the benchmark compares with.
BASELINES = ("ResNet50", "MobileNetV2")
# Builder arguments a caller sets itself; `model_args` may not.
_RESERVED = {"include_top", "weights", "input_shape", "pooling", "input_tensor"}
CLASS_NAMES_FILE = "class_names.json"


def is_model_file(name):
    """Whether `name` names a saved `.keras` model rather than a constructor."""
    return os.fspath(name).endswith(".keras")


def choices(generic=False, baselines=False):
    return (*(BASELINES if baselines else ()), *MODEL_NAMES, *(GENERIC_BUILDERS if generic else ()))


def unknown_model(name, generic=False, baselines=False, files=False):
    """The one error for a name that is no model."""
    also = " or a saved .keras model file" if files else ""
    return ValueError(f"Unknown model {name!r}; choose from {', '.join(choices(generic, baselines))}{also}")


def check_name(name, generic=False, baselines=False, files=False):
    """Raise `unknown_model` unless `name` is a constructor the caller accepts, or (with
    `files`) an existing `.keras` file."""
    if files and is_model_file(name):
        if not os.path.isfile(name):
            raise ValueError(f"Model file {os.fspath(name)!r} not found.")
        return
    if name not in choices(generic, baselines):
        raise unknown_model(name, generic, baselines, files)


def constructor(name, generic=False, baselines=False):
    """The callable that builds `name`."""
    check_name(name, generic, baselines)
    if name in BASELINES:
        import keras

        return getattr(keras.applications, name)
    import keras_pf

    return getattr(keras_pf, name)


def check_model_args(name, model_args):
    """`model_args` that the builder `name` takes (checked before any work is done)."""
    if not model_args:
        return
    if name not in GENERIC_BUILDERS:
        raise ValueError(f"model_args (--model-args) only apply to the generic builders "
                         f"({', '.join(GENERIC_BUILDERS)}), not {name}.")
    parameters = set(inspect.signature(constructor(name, generic=True)).parameters)
    unknown = sorted(set(model_args) - (parameters - _RESERVED))
    if unknown:
        accepted = sorted(parameters - _RESERVED - {"classes", "classifier_activation", "name", "weights_id"})
        raise ValueError(f"model_args (--model-args) {', '.join(unknown)} not accepted by {name}; "
                         f"it takes {', '.join(accepted)}.")


def build(name, model_args=None, generic=True, baselines=False, **kwargs):
    """Build the constructor or generic builder `name` with `kwargs` (the
    keras.applications arguments) and `model_args` (a generic builder's own)."""
    check_name(name, generic, baselines)
    check_model_args(name, model_args)
    try:
        return constructor(name, generic, baselines)(**kwargs, **(model_args or {}))
    except TypeError as error:  # a model_args value of the wrong kind
        raise ValueError(f"model_args (--model-args) {model_args} do not fit {name}: {error}") from error


def class_names_beside(path):
    """The class names `keras-pf finetune` wrote beside a `.keras` model, or None."""
    from keras_pf.mobile.labels import read_labels

    names_path = os.path.join(os.path.dirname(os.path.abspath(path)), CLASS_NAMES_FILE)
    return read_labels(names_path) if os.path.exists(names_path) else None


def load_model_file(path):
    """`(model, class names or None)` of a saved `.keras` model; keras_pf's layers are
    registered, Keras' safe mode stays on, the file is checked first
    (`weights.safe_load`: classes, bytecode, weights, integrity record). One
    `ModelFileError` (a ValueError) naming the file and the reason otherwise."""
    import keras

    from keras_pf.weights.safe_load import load_checked

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Model file {path!r} not found.")
    model = load_checked(path, lambda: keras.saving.load_model(path, compile=False, safe_mode=True))
    return model, class_names_beside(path)


def weights_architecture(weights_id, **kwargs):
    """The architecture a registry entry's checkpoints are converted with (`weights=None`,
    224x224 unless overridden): its constructor name, or a callable registered at runtime."""
    from keras_pf.weights import registry

    model = registry.WEIGHTS[weights_id]["model"]
    if callable(model):
        return model(**kwargs)
    return constructor(model)(weights=None, **kwargs)


def resolve(name, weights=None, files=True, **kwargs):
    """`(model, class names or None)` for a named constructor (built with `weights`, a
    tag, a path or None, and `kwargs`) or a saved `.keras` file (`files`)."""
    check_name(name, files=files)
    if is_model_file(name):
        return load_model_file(name)
    return constructor(name)(weights=weights, **kwargs), None
