"""Read PyTorch checkpoints (`torch.save` zip format) without PyTorch, executing nothing.

A `torch.save` file is a zip archive: `<folder>/data.pkl` (a pickle describing the
object) and `<folder>/data/<key>` (one raw little-endian buffer per storage). The pickle
is read by an unpickler that resolves only an allow-list of globals, each to our own
harmless stand-in, so a malicious checkpoint cannot run code: anything outside the list
raises `UnsafeCheckpointError` naming the global.
"""

import argparse
import collections
import pickle
import zipfile

import numpy as np

# torch storage class -> numpy dtype. int64 is only for BatchNorm's
# `num_batches_tracked` counters.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader understands."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle asks for something outside the allow-list."""


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *unused):
    # `storage` is the flat numpy array that `persistent_load` returned.
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    itemsize = storage.dtype.itemsize
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if needed > storage.size:
        raise CheckpointError(
            f"a tensor of shape {size} reads past the end of its storage "
            f"({storage.size} elements): the file is truncated or corrupt"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:],
        shape=size,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


# (module, name) -> what the unpickler hands back instead of the real object.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, source):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._source = source
        self._storages = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: the checkpoint asks for `{module}.{name}`, which "
                "a tensor checkpoint never needs; refusing to load it (nothing was "
                "executed). Re-save the weights alone with "
                "`torch.save(model.state_dict(), path)`."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._source}: unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(
                f"{self._source}: unsupported storage type {storage_type!r}"
            )
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise CheckpointError(
                    f"{self._source}: storage `{name}` is missing from the archive "
                    "(truncated or corrupt file)"
                ) from None
            array = np.frombuffer(raw, dtype=np.dtype(storage_type.dtype).newbyteorder("<"))
            if array.size < numel:
                raise CheckpointError(
                    f"{self._source}: storage `{name}` holds {array.size} elements, "
                    f"the pickle says {numel} (truncated or corrupt file)"
                )
            self._storages[key] = array.astype(storage_type.dtype, copy=False)
        return self._storages[key]


def looks_like_html(path):
    """True if the file is a web page (what Google Drive sends for a quota or
    virus-scan warning, with HTTP 200) rather than the file asked for."""
    with open(path, "rb") as f:
        head = f.read(512)
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):  # a byte-order mark before the markup
            head = head[len(bom):].decode(codec, errors="ignore").encode("ascii", errors="ignore")
            break
    head = head.lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def read_checkpoint(path):
    """Return the object stored in a `torch.save` zip file, tensors as numpy arrays."""
    path = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        if looks_like_html(path):
            raise CheckpointError(
                f"{path} is an HTML page, not a checkpoint: the download returned a web "
                "page (Google Drive answers a quota or virus-scan warning this way). "
                "Download the file by hand in a browser and pass its path."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable zip-format PyTorch checkpoint (torch >= 1.6): "
            "either the file is truncated or corrupt (download it again), or it is a "
            "legacy-format file (re-save it with a recent torch: "
            "`torch.save(torch.load(path), new_path)`)."
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as f:
            return _RestrictedUnpickler(f, archive, prefix, path).load()


def extract_state_dict(obj, source="checkpoint"):
    """The `{name: array}` state dict inside the layouts trainers write.

    Accepts a raw state dict, `{"model": ...}` (DeiT), `{"state_dict": ...}` (timm and
    others) and `module.`-prefixed keys (DataParallel).
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    for wrapper in ("state_dict", "model", "model_ema", "module"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(v, np.ndarray) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise CheckpointError(
            f"{source}: no tensors found; top-level keys are {sorted(map(str, obj))[:10]}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_state_dict(path):
    """Read a checkpoint file and return its state dict as `{name: numpy array}`."""
    return extract_state_dict(read_checkpoint(path), source=str(path))
