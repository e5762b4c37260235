"""Hostile `.keras` and `.weights.h5` files, made from a small genuine one by editing its
archive: its `config.json` (a class from another module, a Lambda holding bytecode, an
unknown class) or its weights (one missing, one of another shape)."""

import io
import json
import zipfile

import numpy as np


def read_members(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def write_members(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def layers(config):
    return config["config"]["layers"]


def edit_config(source, target, edit):
    """`target`: `source` with its config.json passed through `edit(config)`."""
    members = read_members(source)
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    return write_members(target, members)


def edit_h5(h5_path, edit):
    """Apply `edit(h5py.File)` to a `.weights.h5` file in place."""
    import h5py

    with h5py.File(h5_path, "r+") as f:
        edit(f)
    return h5_path


def edit_weights(source, target, edit):
    """`target`: the `.keras` `source` with its model.weights.h5 passed through `edit`."""
    members = read_members(source)
    tmp = str(target) + ".inner.h5"
    with open(tmp, "wb") as f:
        f.write(members["model.weights.h5"])
    edit_h5(tmp, edit)
    with open(tmp, "rb") as f:
        members["model.weights.h5"] = f.read()
    import os

    os.remove(tmp)
    return write_members(target, members)


def first_dataset(f, contains="conv"):
    """The path of the first weight dataset whose path contains `contains`."""
    import h5py

    found = []
    f.visititems(lambda name, obj: found.append(name)
                 if isinstance(obj, h5py.Dataset) and contains in name else None)
    return found[0]


def drop_weight(f):
    del f[first_dataset(f)]


def reshape_weight(f):
    name = first_dataset(f)
    value = f[name][()]
    del f[name]
    f[name] = np.zeros(value.shape[:-1] + (value.shape[-1] + 1,), value.dtype)


# --- config edits -------------------------------------------------------------------

def os_system(config):
    """The issue's probe: a layer whose class is `os.system`."""
    layer = layers(config)[2]
    layer.update(module="os", class_name="system", registered_name=None,
                 config="touch /tmp/keras_pf_pwned")


def unknown_class(config):
    layer = layers(config)[2]
    layer.update(class_name="NoSuchLayer", registered_name=None)


def lambda_with_code(config):
    """A Lambda layer holding marshalled bytecode, as `keras.layers.Lambda(lambda x: ...)`
    saves it (the code is not valid here: it must never be unmarshalled or run)."""
    layer = layers(config)[2]
    name = layer["config"]["name"]
    layer.update(module="keras.layers", class_name="Lambda", registered_name=None,
                 config={"name": name, "trainable": True, "dtype": "float32",
                         "function": {"class_name": "__lambda__",
                                      "config": {"code": "4wEAAAAAAAAA", "defaults": None,
                                                 "closure": None}},
                         "arguments": {}})


def bytes_of(path):
    return io.BytesIO(open(path, "rb").read())
