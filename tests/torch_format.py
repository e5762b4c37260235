"""A minimal writer of `torch.save`'s zip format, for tests only: full-size checkpoints
with random tensors, and hostile files, without PyTorch. Layout as torch writes it:
`<name>/data.pkl`, `<name>/byteorder`, `<name>/data/<key>`."""

import collections
import pickle
import sys
import types
import zipfile

import numpy as np

_STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("float16"): "HalfStorage",
            np.dtype("int64"): "LongStorage"}


def _fake_torch_globals():
    """Module objects so that pickle can emit GLOBAL torch._utils._rebuild_tensor_v2 etc."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(_STORAGE.values()):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


class _Tensor:
    def __init__(self, array, key, rebuild):
        self.array, self.key, self.rebuild = array, key, rebuild

    def __reduce__(self):
        a = self.array
        stride = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
        return self.rebuild, (("storage", self, self.key, "cpu", a.size), 0, a.shape, stride,
                              False, collections.OrderedDict())


def save(obj, path, name="archive"):
    """Write `obj` (nested dicts of numpy arrays) as torch.save would."""
    fakes = _fake_torch_globals()
    saved = {}
    try:
        sys.modules.update(fakes)
        storage_types = {dt: getattr(fakes["torch"], n) for dt, n in _STORAGE.items()}
        rebuild = fakes["torch._utils"]._rebuild_tensor_v2

        def wrap(o):
            if isinstance(o, np.ndarray):
                key = str(len(saved))
                array = o.copy(order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
                saved[key] = array
                return _Tensor(array, key, rebuild)
            if isinstance(o, dict):
                return collections.OrderedDict((k, wrap(v)) for k, v in o.items())
            return o

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, tuple) and len(o) == 5 and o[0] == "storage":
                    t = o[1]
                    return ("storage", storage_types[t.array.dtype], o[2], o[3], o[4])
                return None

        import io

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(wrap(obj))
    finally:
        for key in fakes:
            sys.modules.pop(key, None)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", buffer.getvalue())
        z.writestr(f"{name}/byteorder", "little")
        for key, array in saved.items():
            z.writestr(f"{name}/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
    return path


def random_state_dict(key_list, seed=0):
    """Random tensors for `[[key, shape, dtype], ...]` (a tests/data/parity_keys file)."""
    rng = np.random.default_rng(seed)
    out = collections.OrderedDict()
    for key, shape, dtype in key_list:
        if dtype == "int64":
            out[key] = np.array(7, np.int64)
        elif key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
            out[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return out
