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
            np.dtype("float64"): "DoubleStorage", np.dtype("int64"): "LongStorage",
            np.dtype("int32"): "IntStorage", np.dtype("bool"): "BoolStorage"}
_BFLOAT16 = "BFloat16Storage"


class BFloat16:
    """A float32 array to be written as bfloat16 (rounded to nearest even, as torch does)."""

    def __init__(self, array):
        bits = np.asarray(array, np.float32).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        self.bits = rounded.astype(np.uint16)

    def as_float32(self):
        return (self.bits.astype(np.uint32) << 16).view(np.float32)


class Raw:
    """A tensor with any rebuild arguments, for hostile files: `data` (bytes) is the
    storage written, `numel` the element count the pickle declares for it."""

    def __init__(self, data, numel, offset, shape, stride, storage="FloatStorage"):
        self.data, self.numel, self.storage = bytes(data), numel, storage
        self.args = (offset, tuple(shape), tuple(stride))


def _fake_torch_globals():
    """Module objects so that pickle can emit GLOBAL torch._utils._rebuild_tensor_v2 etc."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(_STORAGE.values()) | {_BFLOAT16}:
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


class _Tensor:
    def __init__(self, array, key, rebuild, storage, numel, args=None):
        self.array, self.key, self.rebuild = array, key, rebuild
        self.storage, self.numel, self.args = storage, numel, args

    def __reduce__(self):
        a = self.array
        args = self.args or (0, a.shape, tuple(s // a.itemsize for s in a.strides))
        return self.rebuild, (("storage", self, self.key, "cpu", self.numel), *args,
                              False, collections.OrderedDict())


def save(obj, path, name="archive"):
    """Write `obj` (nested dicts of numpy arrays) as torch.save would."""
    fakes = _fake_torch_globals()
    saved = {}
    try:
        sys.modules.update(fakes)
        rebuild = fakes["torch._utils"]._rebuild_tensor_v2

        def wrap(o):
            key = str(len(saved))
            if isinstance(o, Raw):
                saved[key] = o.data
                return _Tensor(np.zeros(0), key, rebuild, o.storage, o.numel, o.args)
            if isinstance(o, BFloat16):
                saved[key] = o.bits.astype("<u2").tobytes()
                return _Tensor(o.bits, key, rebuild, _BFLOAT16, o.bits.size)
            if isinstance(o, np.ndarray):
                array = o.copy(order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
                saved[key] = array.astype(array.dtype.newbyteorder("<")).tobytes()
                return _Tensor(array, key, rebuild, _STORAGE[array.dtype], array.size)
            if isinstance(o, dict):
                return collections.OrderedDict((k, wrap(v)) for k, v in o.items())
            return o

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, tuple) and len(o) == 5 and o[0] == "storage":
                    storage = getattr(fakes["torch"], o[1].storage)
                    return ("storage", storage, o[2], o[3], o[4])
                return None

        import io

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(wrap(obj))
    finally:
        for key in fakes:
            sys.modules.pop(key, None)
    members = {f"{name}/data.pkl": buffer.getvalue(), f"{name}/byteorder": b"little"}
    members.update((f"{name}/data/{key}", data) for key, data in saved.items())
    return write_archive(path, members)


def write_archive(path, members, deflated=()):
    """A zip of `{name: bytes}` (a list of pairs may repeat a name); members named in
    `deflated` are compressed."""
    import warnings

    items = members.items() if isinstance(members, dict) else members
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on a duplicate name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for member, data in items:
                method = zipfile.ZIP_DEFLATED if member in deflated else zipfile.ZIP_STORED
                z.writestr(zipfile.ZipInfo(member), data, compress_type=method)
    return path


def read_archive(path):
    """`{name: bytes}` of every member of the zip at `path`."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def pickle_name(members):
    return next(n for n in members if n.endswith("data.pkl"))


def deflate_bomb(path, pickle_bytes, member, size, prefix="archive/"):
    """A checkpoint whose `member` inflates to `size` zero bytes (written streaming, so
    a GiB-sized member costs a few MB here)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        if member != prefix + "data.pkl":
            z.writestr(prefix + "data.pkl", pickle_bytes, compress_type=zipfile.ZIP_STORED)
        with z.open(member, "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
            f.write(bytes(size & ((1 << 20) - 1)))
    return path


def patch_member_header(path, member, flag_bits=None, method=None):
    """Rewrite a member's general-purpose flags or compression method in both its local
    and central headers (an encrypted or zstd member, as a hostile file would have)."""
    import struct

    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(member).header_offset
    central = _central_entry(data, member.encode())
    for at, flags_at, method_at in ((local, 6, 8), (central, 8, 10)):
        if flag_bits is not None:
            struct.pack_into("<H", data, at + flags_at, flag_bits)
        if method is not None:
            struct.pack_into("<H", data, at + method_at, method)
    open(path, "wb").write(bytes(data))
    return path


def _central_entry(data, name):
    import struct

    at = data.index(b"PK\x01\x02")
    while True:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46:at + 46 + name_len] == name:
            return at
        at += 46 + name_len + extra_len + comment_len


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


def zero_bomb(path, pickle_bytes, member, size, prefix="archive/"):
    """Like `deflate_bomb`, but quick for a GiB: the zip is written by hand, the deflate
    stream being one compressed MiB of zeros (ended by a full flush, so that it does not
    depend on what came before) repeated. `size` is a multiple of 1 MiB below 4 GiB."""
    import struct
    import zlib

    assert size % (1 << 20) == 0 and size < 1 << 32
    mib = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressor.compress(mib)
    compressor.flush(zlib.Z_FULL_FLUSH)  # after the first block: a block without history
    block = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = size >> 20
    stream_end = compressor.flush()
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(mib, crc)
    members = [(prefix + "data.pkl", zipfile.ZIP_STORED, pickle_bytes, len(pickle_bytes),
                zlib.crc32(pickle_bytes), None),
               (member, zipfile.ZIP_DEFLATED, None, size, crc, len(block) * count + len(stream_end))]
    central, offset = [], 0
    with open(path, "wb") as f:
        for name, method, data, file_size, member_crc, compressed in members:
            encoded = name.encode()
            compressed = len(data) if compressed is None else compressed
            header = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21,
                                 member_crc, compressed, file_size, len(encoded), 0)
            f.write(header + encoded)
            if data is not None:
                f.write(data)
            else:
                for _ in range(count):
                    f.write(block)
                f.write(stream_end)
            central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method,
                                       0, 0x21, member_crc, compressed, file_size, len(encoded),
                                       0, 0, 0, 0, 0, offset) + encoded)
            offset = f.tell()
        directory = b"".join(central)
        f.write(directory)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central),
                            len(directory), offset, 0))
    return path
