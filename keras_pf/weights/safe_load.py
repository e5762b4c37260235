"""Reading `.keras` and `.weights.h5` files as the hostile input they may be.

Every model or weights file the package loads (the `weights=` argument, a `.keras` given
to `keras-pf export` or `gradcam`, the checkpoints `finetune --resume` continues from)
goes through here. When one cannot be loaded the error is a `ModelFileError`: one line
naming the file and the reason, never Keras' generic message or a dump of the config;
the command line prints it and exits with status 2. Nothing in the file is executed:

- a `.keras` file's `config.json` is read (at most `MAX_CONFIG_BYTES`) and every object
  it names checked *before* Keras deserializes it: a class must be one of Keras,
  keras_pf or keras_hub, or one registered with
  `keras.saving.register_keras_serializable` (by the program loading it); Python bytecode
  (a `Lambda` of a lambda, any `__lambda__`), a `TFSMLayer` (loads a SavedModel from
  elsewhere) and a `TorchModuleWrapper` (a pickle) are refused. Keras then loads it in
  safe mode, which stays on;
- weights: a weight the model has but the file lacks, or has with another shape, is
  named (Keras says "A total of N objects could not be loaded" or, for `.weights.h5`,
  only warns and leaves the weight random);
- an integrity sidecar beside the file (`FILE.sha256.json`, see
  `keras_pf.weights.integrity`), if there is one, must match the file.
"""

import importlib
import io
import json
import os
import warnings
import zipfile

MAX_CONFIG_BYTES = 64 * 2 ** 20  # a ViT-B's config.json is ~100 KB
# Packages whose classes a config may name (Keras itself imports only these by module).
ALLOWED_PACKAGES = ("keras", "keras_pf", "keras_hub")
# Serialized values that are not objects of a class (Keras' own markers).
_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__",
                      "__ellipsis__", "__slice__", "__typespec__", "__tuple__"})
# Classes that bring in code or files from outside the archive, whatever their module.
_REFUSED_CLASSES = {
    "TFSMLayer": "loads a TensorFlow SavedModel from a path outside the file",
    "TorchModuleWrapper": "holds a pickled PyTorch module (a pickle runs code)",
}
_NOTHING_RUN = "refusing to load it (nothing in it was executed)"
# What Keras warns when it loads a model but leaves some of its weights as initialized.
_PARTIAL_LOAD = ("freshly-initialized", "could not be loaded", "Skipping nested")


class ModelFileError(ValueError):
    """A `.keras` or weights file that cannot be loaded: one line, naming the file."""


def _short(value, limit=80):
    """A file-given value as one short printable line."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:limit] + ("..." if len(text) > limit else "")


def one_line(error, limit=200):
    """The first line of an exception's message, without a config dump, bounded. For
    Keras' "A total of N objects could not be loaded. Example error message for object
    ...:" the example is the line kept."""
    text = str(error).strip()
    if text.startswith("A total of") and "\n\n" in text:
        text = text.split("\n\n")[1]
    for marker in ("Full object config:", "Full config:", "config={", "\n"):
        text = text.split(marker)[0]
    text = _short(text.strip().rstrip(".:;,"), limit)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- the config of a .keras archive ----------------------------------------------------

def open_archive(path):
    """The `.keras` file as a `zipfile.ZipFile`; a `ModelFileError` if it is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
        raise ModelFileError(f"{path} is not a readable .keras archive (a zip file): it is "
                             f"truncated or corrupt ({one_line(error, 80)}); save or copy it "
                             "again") from None


def _member(path, archive, name, limit):
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{path}: the .keras archive has no {name}; it was not written "
                             "by model.save (save it again)") from None
    if info.file_size > limit:
        raise ModelFileError(f"{path}: {name} declares {info.file_size} bytes, more than the "
                             f"{limit} a model's needs; {_NOTHING_RUN}")
    try:
        with archive.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
            RuntimeError) as error:  # zlib errors, encrypted members, CRC mismatches
        raise ModelFileError(f"{path}: {name} in the archive cannot be read "
                             f"({one_line(error, 80)}); the file is corrupt") from None
    if len(data) > limit:
        raise ModelFileError(f"{path}: {name} holds more than {limit} bytes; {_NOTHING_RUN}")
    return data


def read_config(path):
    """The parsed `config.json` of the `.keras` file at `path` (not yet checked)."""
    with open_archive(path) as archive:
        data = _member(path, archive, "config.json", MAX_CONFIG_BYTES)
    try:
        config = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: config.json is not valid JSON ({one_line(error, 80)}); "
                             "the file is corrupt") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{path}: config.json does not describe a model; the file was "
                             "not written by model.save")
    return config


def _registered(name):
    import keras

    return isinstance(name, str) and keras.saving.get_registered_object(name) is not None


def _class_in(module, name):
    """The attribute `name` of `module` (a module of an allowed package), or None."""
    try:
        imported = importlib.import_module(module)
    except Exception:  # ImportError, or an allowed package failing to import
        return None
    return getattr(imported, name, None)


_KERAS_NAMESPACES = ("layers", "initializers", "regularizers", "constraints", "activations",
                     "losses", "metrics", "optimizers", "models", "saving")


def _object_problem(obj):
    """What is wrong with the serialized object `obj` (a dict with a class_name), as
    "uses X, which ...", or None if it may be loaded."""
    cls, module, registered = obj.get("class_name"), obj.get("module"), obj.get("registered_name")
    if not isinstance(cls, str) or not (module is None or isinstance(module, str)):
        return "names an object by something other than a class and module name"
    if cls == "__lambda__":
        return ("holds Python bytecode (a Lambda layer or function made from a lambda), which "
                "safe mode never runs: rebuild the model in code and load only its weights")
    if cls in _MARKERS:
        return None
    if cls in _REFUSED_CLASSES:
        return f"uses `{_short(cls)}`, which {_REFUSED_CLASSES[cls]}"
    if _registered(registered) or (cls == "function" and _registered(obj.get("config"))):
        return None
    what = f"`{_short(module)}.{_short(cls)}`" if module else f"`{_short(cls)}`"
    register = ("register your own class with @keras.saving.register_keras_serializable "
                "and import it before loading")
    package = (module or "").split(".")[0]
    if module in (None, "builtins"):
        if cls == "function" and module == "builtins":
            return None  # a Keras built-in function by name ("relu"); Keras resolves it
        import keras

        if any(isinstance(getattr(getattr(keras, ns), cls, None), type) for ns in _KERAS_NAMESPACES):
            return None
        return f"uses {what}, a class neither Keras nor keras_pf has ({register})"
    if package not in ALLOWED_PACKAGES:
        return (f"uses {what}, which is not a class of Keras, keras_pf or keras_hub nor one "
                "registered with @keras.saving.register_keras_serializable")
    if cls == "function":
        return None  # a function of an allowed package, resolved by Keras
    if not isinstance(_class_in(module, cls), type):
        return (f"uses {what}, a class {package} does not have (a file of another version, "
                f"or a custom class: {register})")
    return None


def check_config(path, config):
    """Raise a `ModelFileError` for the first object in `config` that may not be loaded,
    naming the layer it is in. Walks the config without recursion (any depth)."""
    todo = [(config, None)]
    while todo:
        node, layer = todo.pop()
        if isinstance(node, list):
            todo.extend((item, layer) for item in reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        if "class_name" in node and node.get("class_name") not in _MARKERS:
            inner = node.get("config")
            name = node.get("name")
            if not isinstance(name, str) and isinstance(inner, dict):
                name = inner.get("name")
            layer = name if isinstance(name, str) else layer
            problem = _object_problem(node)
            if problem:
                who = f"layer '{_short(layer, 60)}'" if layer else "the model config"
                raise ModelFileError(f"{path}: {who} {problem}; {_NOTHING_RUN}")
        todo.extend((value, layer) for value in reversed(list(node.values())))


def check_keras_file(path):
    """Check the `.keras` file at `path` before Keras reads it: a readable archive whose
    config names only loadable classes, and its integrity sidecar if it has one."""
    from keras_pf.weights import integrity

    integrity.check_sidecar(path)
    check_config(path, read_config(path))


# --- weights ---------------------------------------------------------------------------

def weights_layout(path):
    """`{dataset path: shape}` of a `.weights.h5` file, or of the weights inside a
    `.keras` archive; a `ModelFileError` if it cannot be read."""
    import h5py

    path = os.fspath(path)
    source = path
    if path.endswith(".keras"):
        with open_archive(path) as archive:
            names = archive.namelist()
            if "model.weights.h5" not in names:
                raise ModelFileError(f"{path}: the .keras archive has no model.weights.h5; "
                                     "save it again with model.save")
            info = archive.getinfo("model.weights.h5")
            source = io.BytesIO(_member(path, archive, "model.weights.h5", max(info.file_size, 1)))
    layout = {}
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError) as error:  # h5py's message does not name the file
        raise ModelFileError(
            f"{path} is not a readable HDF5 weights file: it is truncated or corrupt "
            f"({one_line(error, 100)}); write or download it again") from None
    try:
        with f:
            f.visititems(lambda name, obj: layout.__setitem__(name, obj.shape)
                         if isinstance(obj, h5py.Dataset) else None)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise ModelFileError(f"{path}: its HDF5 structure cannot be read "
                             f"({one_line(error, 100)}); the file is corrupt") from None
    return layout


def reference_layout(model):
    """What a weights file of `model` holds: `{dataset path: shape}`."""
    from keras_pf import tempfiles

    with tempfiles.private_dir("reference-") as tmp:
        reference = os.path.join(tmp, "reference.weights.h5")
        model.save_weights(reference)
        return weights_layout(reference)


def layout_problems(expected, found, model):
    """Missing, mis-shaped and unexpected weights of `found` against `expected`. A
    classifier in the file loads into a model without one; position embeddings may
    differ in grid size (resized on load); an optimizer's state is not compared."""
    problems = [f"missing `{k}` {v}" for k, v in expected.items() if k not in found]
    problems += [
        f"`{k}` has shape {found[k]}, the model {v}" for k, v in expected.items()
        if k in found and found[k] != v and "position_embedding" not in k
    ]
    # (a compiled model's file also holds its optimizer's state: not the model's weights)
    extra = [k for k in found if k not in expected and not k.startswith("optimizer/")]
    has_head = any(layer.name == "predictions" for layer in model.layers)
    if extra and (has_head or not all(k.count("/") and k.split("/")[1].startswith("dense")
                                      for k in extra)):
        problems += [f"unexpected `{_short(k)}`" for k in extra]
    return problems


def check_weights_file(path):
    """Check a `.weights.h5` file before it is read: its integrity sidecar, if any."""
    from keras_pf.weights import integrity

    integrity.check_sidecar(path)


def load_weights(model, path):
    """`model.load_weights(path)`; an error of Keras', or a warning that it left some
    weights as initialized, becomes one line naming the file and the weight."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
            error = None
        except Exception as exception:
            error = exception
    partial = [w for w in caught if any(m in str(w.message) for m in _PARTIAL_LOAD)]
    if error is None and not partial:
        for w in caught:  # (through the caller's filters)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model
    try:
        problems = layout_problems(reference_layout(model), weights_layout(path), model)
        problems = [p for p in problems if "`optimizer/" not in p]
    except Exception:
        problems = []
    reason = ("; ".join(problems[:3]) + (" ..." if len(problems) > 3 else "") if problems
              else one_line(error) if error else one_line(partial[0].message))
    raise ModelFileError(f"{path}: its weights do not load into model '{model.name}' "
                         f"({reason})")


# --- whole models ----------------------------------------------------------------------

def load_checked(path, load):
    """`load()` (the resolver loading the model, in safe mode) for a
    `.keras` file that may be hostile or broken, checked first (`check_keras_file`); an
    error, or Keras' warning that it left weights as initialized, becomes one line."""
    path = os.fspath(path)
    check_keras_file(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load()
            error = None
        except Exception as exception:
            model, error = None, exception
    partial = [w for w in caught if any(m in str(w.message) for m in _PARTIAL_LOAD)]
    if error is None and not partial:
        for w in caught:  # (through the caller's filters)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model
    reason = _diagnose(path) or (one_line(error) if error else one_line(partial[0].message))
    raise ModelFileError(f"{path}: cannot be loaded as a Keras model ({reason})")


def _diagnose(path):
    """What is wrong with the weights of the (already checked) `.keras` file, else None."""
    import keras

    try:
        model = keras.models.model_from_json(json.dumps(read_config(path)))
        problems = layout_problems(reference_layout(model), weights_layout(path), model)
    except Exception:
        return None
    if not problems:
        return None
    return ("its weights do not fit its own architecture: " + "; ".join(problems[:3])
            + (" ..." if len(problems) > 3 else "") + "; the file was edited or is corrupt")


# --- integrity records of a user's files --------------------------------------------------

HASHABLE = (".weights.h5", ".keras", ".h5")


def record_file(path):
    """Write the integrity record of a user's weights or model file (`keras-pf weights
    hash`), once it is known to be a readable one: a truncated file is not recorded."""
    from keras_pf.weights import integrity

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    if not path.endswith(HASHABLE):
        raise ValueError(f"{path}: expected a weights or model file ({', '.join(HASHABLE)})")
    weights_layout(path)
    return integrity.record(path)
