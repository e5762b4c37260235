"""Read PyTorch checkpoints (`torch.save` zip format) without PyTorch, executing nothing.

A `torch.save` file is a zip archive: `<folder>/data.pkl` (a pickle describing the
object) and `<folder>/data/<key>` (one raw little-endian buffer per storage).

The contract, for any bytes: `load_state_dict` returns exactly the tensors the file
declares, or raises `CheckpointError` (`UnsafeCheckpointError` for what a tensor
checkpoint never needs) naming the file and the problem in one line. It never executes
code, never reads outside a storage's bytes, changes no state outside the call, never
crashes the interpreter, and its time and memory are bounded: a declared size beyond
`max_elements` (the caller passes what its model can use) is refused before anything
is allocated or inflated. How:

- The pickle is not given to `pickle`: every opcode is checked against a small
  allow-list (walking `pickletools.genops`) before anything runs, then a small stack
  machine here interprets it. Globals resolve to inert tokens, fresh per load; REDUCE
  and NEWOBJ act only on the allow-listed callables, BUILD only on a dict or an
  `argparse.Namespace` the file itself created. Operations, nesting depth and the
  expanded size of shared references (billion laughs, cycles) are bounded.
- Tensors are recorded, not read, while unpickling; their size, stride and offset are
  checked against their storage's length (no negatives, nothing outside it). Only the
  tensors of the state dict are then read, after the budget check.
- Zip members are read with their declared size as the limit, the CRC checked;
  encrypted or unsupported-compression members, duplicate members and duplicate dict
  keys are refused.
- Without a budget from the caller (`max_elements=None`), compressed members are also
  bounded by their compressed size: `torch.save` stores members uncompressed, so all
  deflated members together may inflate to at most `_MAX_INFLATE_RATIO` times their
  compressed bytes plus `_INFLATE_SLACK`; a member beyond that is refused before it is
  inflated (a 1 MB member declaring a 1 GiB tensor of zeros). With a budget, the
  budget alone bounds them.
"""

import argparse
import collections
import io
import os
import pickletools
import re
import zipfile
import zlib

import numpy as np

# torch storage class -> numpy dtype of its bytes. bfloat16 has no numpy dtype: its
# bits are widened to float32 on read (exact).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# Without a budget from the caller: 2**28 elements (1 GiB of float32), above every
# published model (the largest has 94M parameters).
DEFAULT_MAX_ELEMENTS = 2 ** 28
_MAX_PICKLE_BYTES = 16 * 2 ** 20  # a full training checkpoint's data.pkl is < 1 MiB
_MAX_OPS = 1_000_000  # ~20 per tensor in genuine files
_MAX_MEMBERS = 50_000  # zip entries; torch writes one per storage (~300 for a ResNet-50)
_MAX_NODES = 1_000_000  # objects in the structure, shared references counted each time
_MAX_DEPTH = 64  # genuine checkpoints nest 2-6 deep
_MAX_DIMS = 16
# Deflated members, without a caller's budget: real float32 weights deflate by ~1.1x; a
# member far beyond this ratio is mostly one repeated byte, i.e. not a trained tensor.
_MAX_INFLATE_RATIO = 16
_INFLATE_SLACK = 16 * 2 ** 20  # bytes beyond the ratio, in all (zero biases, small tensors)

_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ZIP_METHOD_NAMES = {12: "bzip2", 14: "lzma", 93: "zstd", 95: "xz", 99: "AES-encrypted"}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader understands."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle asks for something outside the allow-list."""


# --- what the pickle may contain ---------------------------------------------------

# Opcodes `torch.save` writes (protocol 2, or 4/5 when asked), plus harmless stack
# manipulation. Everything else (OBJ, INST, NEWOBJ_EX, EXT1/2/4, BINBYTES8, NEXT_BUFFER,
# LONG4, sets, protocol-0 text opcodes, ...) is refused by name.
_ALLOWED_OPCODES = frozenset("""
    PROTO FRAME STOP MARK POP POP_MARK DUP
    NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT BINUNICODE SHORT_BINUNICODE
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS
    EMPTY_DICT DICT SETITEM SETITEMS
    BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET
    GLOBAL STACK_GLOBAL REDUCE NEWOBJ BUILD BINPERSID
""".split())

_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = ("torch._utils", "_rebuild_parameter")
_ORDERED_DICT = ("collections", "OrderedDict")
_NAMESPACE = ("argparse", "Namespace")
_ALLOWED_GLOBALS = frozenset(
    {_REBUILD_TENSOR, _REBUILD_PARAMETER, _ORDERED_DICT, _NAMESPACE}
    | {("torch", name) for name in _STORAGE_DTYPES}
)


class _Global:
    """An allow-listed global: a token, never the real object."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return ".".join(self.name)


class _Storage:
    __slots__ = ("key", "dtype", "numel", "dtype_name")

    def __init__(self, key, dtype_name, numel):
        self.key, self.dtype_name, self.numel = key, dtype_name, numel
        self.dtype = _STORAGE_DTYPES[dtype_name]


class _TensorRef:
    """A tensor as the pickle declares it, validated against its storage, not yet read."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=object)) if self.shape else 1


def _is_int(x):
    return type(x) is int


def _describe(x):
    """A short, bounded description (never the repr of a file-made structure)."""
    if isinstance(x, str):
        return repr(x[:60] + ("..." if len(x) > 60 else ""))
    if _is_int(x) or isinstance(x, (float, bool)) or x is None:
        return repr(x) if len(repr(x)) < 40 else "a huge int"
    if isinstance(x, _Global):
        return f"`{x}`"
    if isinstance(x, _TensorRef):
        return "a tensor"
    return f"a {type(x).__name__}"


class _Unpickler:
    """Interprets an allow-listed pickle; builds plain Python objects and `_TensorRef`s."""

    def __init__(self, data, source, max_elements):
        self.data, self.source, self.max_elements = data, source, max_elements
        self.storages = {}

    def fail(self, message, unsafe=False):
        raise (UnsafeCheckpointError if unsafe else CheckpointError)(f"{self.source}: {message}")

    def ops(self):
        """`(opcode name, argument, position)`, as `pickletools.genops`, but an opcode
        outside the allow-list is refused by name before its argument is read."""
        stream = io.BytesIO(self.data)
        while True:
            pos = stream.tell()
            code = stream.read(1)
            if not code:
                self.fail("data.pkl ends before its STOP opcode: the file is truncated or corrupt")
            op = pickletools.code2op.get(code.decode("latin-1"))
            if op is None:
                self.fail(f"data.pkl has an unknown pickle opcode {code!r} at byte {pos}: the "
                          "file is corrupt")
            if op.name not in _ALLOWED_OPCODES:
                self.fail(f"data.pkl uses the pickle opcode {op.name} (byte {pos}), which a "
                          "tensor checkpoint never needs; refusing to load it (nothing was "
                          "executed)", unsafe=True)
            try:
                arg = op.arg.reader(stream) if op.arg is not None else None
            except (ValueError, UnicodeDecodeError, OverflowError) as error:
                self.fail(f"data.pkl is not a valid pickle ({op.name} at byte {pos}: "
                          f"{str(error)[:100]}): the file is corrupt")
            yield op.name, arg, pos
            if op.name == "STOP":
                return

    def check(self):
        """Pass 1: every opcode and GLOBAL allowed (walking the whole stream) before
        anything is built."""
        count = 0
        for name, arg, pos in self.ops():
            count += 1
            if count > _MAX_OPS:
                self.fail(f"data.pkl has more than {_MAX_OPS} pickle operations; "
                          "a tensor checkpoint needs far fewer", unsafe=True)
            if name == "GLOBAL":
                self.resolve(*arg.split(" ", 1))

    def resolve(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            self.fail(f"the checkpoint asks for `{module[:80]}.{name[:80]}`, which a tensor "
                      "checkpoint never needs; refusing to load it (nothing was executed). "
                      "Re-save the weights alone with `torch.save(model.state_dict(), path)`",
                      unsafe=True)
        return _Global((module, name))

    def load(self):
        self.check()
        stack, marks, memo = [], [], {}
        result = None
        for name, arg, pos in self.ops():
            try:
                result = self.step(name, arg, stack, marks, memo)
            except CheckpointError:
                raise
            except (IndexError, KeyError, TypeError, ValueError, AttributeError) as error:
                self.fail(f"data.pkl is malformed at byte {pos} ({name}: "
                          f"{type(error).__name__}): the file is corrupt")
            if name == "STOP":
                break
        self.check_structure(result)
        return result

    def pop_mark(self, stack, marks):
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def step(self, name, arg, stack, marks, memo):
        push = stack.append
        if name in ("PROTO", "FRAME"):
            return None
        if name == "STOP":
            return stack.pop()
        if name == "MARK":
            marks.append(len(stack))
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            self.pop_mark(stack, marks)
        elif name == "DUP":
            push(stack[-1])
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            push({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
                      "BINUNICODE", "SHORT_BINUNICODE"):
            push(arg)
        elif name == "EMPTY_TUPLE":
            push(())
        elif name == "TUPLE":
            push(tuple(self.pop_mark(stack, marks)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(stack) < n or (marks and len(stack) - n < marks[-1]):
                raise IndexError("stack underflow")
            items = tuple(stack[-n:])
            del stack[-n:]
            push(items)
        elif name == "EMPTY_LIST":
            push([])
        elif name == "LIST":
            push(self.pop_mark(stack, marks))
        elif name == "APPEND":
            value = stack.pop()
            self.list_of(stack[-1]).append(value)
        elif name == "APPENDS":
            items = self.pop_mark(stack, marks)
            self.list_of(stack[-1]).extend(items)
        elif name == "EMPTY_DICT":
            push({})
        elif name == "DICT":
            items = self.pop_mark(stack, marks)
            d = {}
            self.set_items(d, items)
            push(d)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            self.set_items(stack[-1], [key, value])
        elif name == "SETITEMS":
            items = self.pop_mark(stack, marks)
            self.set_items(stack[-1], items)
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            push(memo[arg])
        elif name == "GLOBAL":
            push(self.resolve(*arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            name_, module = stack.pop(), stack.pop()
            if not (isinstance(module, str) and isinstance(name_, str)):
                self.fail("data.pkl has a STACK_GLOBAL whose names are not strings", unsafe=True)
            push(self.resolve(module, name_))
        elif name == "BINPERSID":
            push(self.persistent_load(stack.pop()))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            push(self.reduce(func, args))
        elif name == "NEWOBJ":
            args, cls = stack.pop(), stack.pop()
            if not (isinstance(cls, _Global) and cls.name == _NAMESPACE and args == ()):
                self.fail(f"data.pkl creates an object of {_describe(cls)} (NEWOBJ); only "
                          "`argparse.Namespace` is allowed", unsafe=True)
            push(argparse.Namespace())
        elif name == "BUILD":
            state = stack.pop()
            self.build(stack[-1], state)
        else:  # unreachable: check() refused it
            self.fail(f"data.pkl uses the pickle opcode {name}", unsafe=True)
        return None

    def list_of(self, target):
        if type(target) is not list:
            self.fail(f"data.pkl appends to {_describe(target)}, not a list")
        return target

    def set_items(self, target, items):
        if not isinstance(target, dict):  # (every dict here is one the file created)
            self.fail(f"data.pkl sets items on {_describe(target)}, not a dict")
        if len(items) % 2:
            raise IndexError("odd number of items")
        for key, value in zip(items[::2], items[1::2]):
            # Only scalar keys: hashing a file-made tuple could recurse without limit.
            if not (isinstance(key, (str, float, bool)) or _is_int(key) or key is None):
                self.fail(f"a dict key is {_describe(key)}; checkpoints use strings")
            if key in target:
                self.fail(f"the key {_describe(key)} appears twice in one dict; a genuine "
                          "checkpoint never repeats a key (the file was tampered with)")
            target[key] = value

    def reduce(self, func, args):
        if not isinstance(func, _Global) or type(args) is not tuple:
            self.fail(f"data.pkl calls {_describe(func)} (REDUCE); only tensor rebuilders "
                      "and OrderedDict are allowed", unsafe=True)
        if func.name == _ORDERED_DICT:
            d = collections.OrderedDict()
            if args == ():
                return d
            if len(args) == 1 and type(args[0]) is list:
                pairs = args[0]
                if not all(type(p) is tuple and len(p) == 2 for p in pairs):
                    self.fail("an OrderedDict is built from something other than key-value pairs")
                self.set_items(d, [x for p in pairs for x in p])
                return d
            self.fail("an OrderedDict is built with unexpected arguments")
        if func.name == _REBUILD_TENSOR:
            return self.rebuild_tensor(args)
        if func.name == _REBUILD_PARAMETER:
            if not args or not isinstance(args[0], _TensorRef):
                self.fail("a Parameter is rebuilt from something other than a tensor")
            return args[0]
        self.fail(f"data.pkl calls {_describe(func)} (REDUCE), which is not a function a "
                  "tensor checkpoint calls", unsafe=True)

    def build(self, target, state):
        if isinstance(target, argparse.Namespace):  # one the file created (NEWOBJ)
            if not isinstance(state, dict) or not all(
                    isinstance(k, str) and not k.startswith("__") for k in state):
                self.fail("an argparse.Namespace is given a state that is not a dict of names")
            vars(target).update(state)
            return
        if isinstance(target, dict):
            return  # a state dict's `_metadata` (module versions): not needed
        self.fail(f"data.pkl sets the state of {_describe(target)} (BUILD); only dicts and "
                  "Namespaces the file created may be given one", unsafe=True)

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            self.fail(f"unknown persistent id ({_describe(pid)}); expected a torch storage")
        _, storage_type, key, _location, numel = pid
        if not (isinstance(storage_type, _Global) and storage_type.name[0] == "torch"):
            self.fail(f"unsupported storage type {_describe(storage_type)}", unsafe=True)
        if not (isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_]{1,64}", key)):
            self.fail(f"storage key {_describe(key)} is not a plain name")
        if not _is_int(numel) or numel < 0:
            self.fail(f"storage `{key}` declares {_describe(numel)} elements")
        if numel > self.max_elements:
            self.fail(f"storage `{key}` declares {numel} elements, more than the "
                      f"{self.max_elements} the model can use; refused before reading it")
        storage = _Storage(key, storage_type.name[1], numel)
        known = self.storages.setdefault(key, storage)
        if (known.dtype_name, known.numel) != (storage.dtype_name, numel):
            self.fail(f"storage `{key}` is declared twice with different types or sizes")
        return known

    def rebuild_tensor(self, args):
        if len(args) < 4:
            self.fail("a tensor is rebuilt with too few arguments")
        storage, offset, shape, stride = args[:4]
        if not isinstance(storage, _Storage):
            self.fail(f"a tensor's storage is {_describe(storage)}")
        if not (type(shape) is tuple and type(stride) is tuple and len(shape) == len(stride)
                and len(shape) <= _MAX_DIMS
                and all(_is_int(v) for v in (offset, *shape, *stride))):
            self.fail(f"storage `{storage.key}`: a tensor's shape, stride or offset is not "
                      "a tuple of integers of equal length")
        if offset < 0 or min(shape + stride, default=0) < 0:
            self.fail(f"storage `{storage.key}`: a tensor has a negative size, stride or "
                      f"offset (shape {_describe(shape)}); the file is corrupt or hostile")
        size = 1
        for n in shape:
            size *= n
            if size > self.max_elements:
                self.fail(f"storage `{storage.key}`: a tensor declares more than "
                          f"{self.max_elements} elements, more than the model can use; "
                          "refused before allocating it")
        if size:
            last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
            if last >= storage.numel:
                self.fail(f"storage `{storage.key}`: a tensor reaches element {last}, "
                          f"outside its storage of {storage.numel} elements; the file is "
                          "truncated, corrupt or hostile")
        # A dimension of size 1 never steps: its stride (any size) is irrelevant.
        stride = tuple(s if n > 1 else 0 for n, s in zip(shape, stride))
        return _TensorRef(storage, offset, shape, stride)

    def check_structure(self, root):
        """Bound the depth and the expanded size (shared references, cycles) of the result."""
        todo, nodes = [(root, 0)], 0
        while todo:
            obj, depth = todo.pop()
            nodes += 1
            if nodes > _MAX_NODES:
                self.fail(f"the pickled structure expands to more than {_MAX_NODES} objects "
                          "(shared references or cycles); refused", unsafe=True)
            if depth > _MAX_DEPTH:
                self.fail(f"the pickled structure nests deeper than {_MAX_DEPTH} levels; "
                          "refused", unsafe=True)
            if isinstance(obj, dict):
                children = obj.values()
            elif isinstance(obj, (list, tuple)):
                children = obj
            elif isinstance(obj, argparse.Namespace):
                children = vars(obj).values()
            else:
                continue
            todo.extend((child, depth + 1) for child in children)


# --- the zip container ---------------------------------------------------------------

class _Archive:
    def __init__(self, path, bound_inflation=False):
        self.path = path
        # what deflated members may still inflate beyond _MAX_INFLATE_RATIO x compressed
        self.inflate_slack = _INFLATE_SLACK if bound_inflation else None
        entries = _declared_entries(path)
        if entries > _MAX_MEMBERS:
            raise CheckpointError(f"{path}: the zip declares {entries} members; a checkpoint "
                                  f"has one per tensor storage (refused above {_MAX_MEMBERS})")
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            self.fail_not_zip()
        except (ValueError, NotImplementedError, OverflowError, EOFError, OSError) as error:
            if isinstance(error, OSError) and not os.path.isfile(path):
                raise
            raise CheckpointError(f"{path}: the zip container is corrupt "
                                  f"({str(error)[:120]})") from None
        counts = collections.Counter(info.filename for info in self.zip.infolist())
        duplicate = next((n for n, count in counts.items() if count > 1), None)
        if duplicate is not None:
            self.close()
            raise CheckpointError(f"{path}: the archive holds `{duplicate[:100]}` twice; a "
                                  "genuine checkpoint never does (the file was tampered with)")

    def fail_not_zip(self):
        if looks_like_html(self.path):
            raise CheckpointError(
                f"{self.path} is an HTML page, not a checkpoint: the download returned a web "
                "page (Google Drive answers a quota or virus-scan warning this way). "
                "Download the file by hand in a browser and pass its path.") from None
        raise CheckpointError(
            f"{self.path} is not a readable zip-format PyTorch checkpoint (torch >= 1.6): "
            "either the file is truncated or corrupt (download it again), or it is a "
            "legacy-format file (re-save it with a recent torch: "
            "`torch.save(torch.load(path), new_path)`).") from None

    def close(self):
        self.zip.close()

    def names(self):
        return self.zip.namelist()

    def read(self, name, limit, exact=None):
        """The member's bytes; its declared size must be at most `limit` (or `exact`)."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: `{name}` is missing from the archive "
                                  "(truncated or corrupt file)") from None
        where = f"{self.path}: archive member `{name}`"
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted; torch.save never encrypts")
        if info.compress_type not in _ZIP_METHODS:
            method = _ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise CheckpointError(f"{where} is compressed with {method}; torch.save writes "
                                  "stored members (re-save the file with torch.save)")
        if exact is not None and info.file_size != exact:
            raise CheckpointError(f"{where} holds {info.file_size} bytes, the pickle "
                                  f"declares {exact} (truncated, corrupt or hostile file)")
        if info.file_size > limit:
            raise CheckpointError(f"{where} declares {info.file_size} bytes, more than the "
                                  f"{limit} allowed; refused before inflating it")
        if self.inflate_slack is not None and info.compress_type == zipfile.ZIP_DEFLATED:
            beyond = info.file_size - _MAX_INFLATE_RATIO * info.compress_size
            if beyond > self.inflate_slack:
                raise CheckpointError(
                    f"{where} is compressed {info.compress_size} bytes inflating to "
                    f"{info.file_size} (torch.save stores tensors uncompressed; more than "
                    f"{_MAX_INFLATE_RATIO}x is not trained weights); refused before inflating "
                    "it. Pass max_elements (what your model can use) to read it anyway")
            self.inflate_slack -= max(beyond, 0)
        buffer = bytearray(info.file_size)
        view = memoryview(buffer)
        try:
            with self.zip.open(info) as f:
                done = 0
                while done < info.file_size:
                    chunk = f.read(min(1 << 20, info.file_size - done))
                    if not chunk:
                        break
                    view[done:done + len(chunk)] = chunk
                    done += len(chunk)
                if done != info.file_size or f.read(1):  # the last read checks the CRC
                    raise CheckpointError(f"{where} does not hold its declared "
                                          f"{info.file_size} bytes (corrupt file)")
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
                OverflowError, RuntimeError, OSError) as error:  # OSError: seek before start
            raise CheckpointError(f"{where} cannot be read ({str(error)[:120]}): the file "
                                  "is corrupt (download it again)") from None
        return buffer


def _declared_entries(path):
    """The member count in the zip's end record (0 if there is none), read before
    `zipfile` builds an object per member."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 12:
        return 0
    entries = int.from_bytes(tail[at + 10:at + 12], "little")
    zip64 = tail.rfind(b"PK\x06\x06", 0, at)
    if entries == 0xFFFF and zip64 >= 0 and len(tail) >= zip64 + 40:
        entries = int.from_bytes(tail[zip64 + 32:zip64 + 40], "little")
    return entries


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


class _Checkpoint:
    """An open checkpoint: its structure (tensors not yet read) and its archive."""

    def __init__(self, path, max_elements):
        self.path = str(path)
        bound_inflation = max_elements is None  # no model budget: the file bounds itself
        self.max_elements = DEFAULT_MAX_ELEMENTS if bound_inflation else max_elements
        max_elements = self.max_elements
        self.archive = _Archive(self.path, bound_inflation)
        try:
            pickles = [n for n in self.archive.names()
                       if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise CheckpointError(f"{self.path}: expected one data.pkl in the archive, "
                                      f"found {len(pickles)}")
            self.prefix = pickles[0][: -len("data.pkl")]
            byteorder = self.prefix + "byteorder"
            if byteorder in self.archive.names():
                if bytes(self.archive.read(byteorder, 16)).strip() != b"little":
                    raise CheckpointError(f"{self.path}: big-endian checkpoints are not supported")
            data = bytes(self.archive.read(pickles[0], _MAX_PICKLE_BYTES))
            self.root = _Unpickler(data, self.path, max_elements).load()
        except BaseException:
            self.archive.close()
            raise

    def close(self):
        self.archive.close()

    def read_tensors(self, refs):
        """`{name: _TensorRef}` -> `{name: array}`, within the budget, storage by storage."""
        storages = {id(r.storage): r.storage for r in refs.values()}
        for what, total in (("tensors", sum(r.size for r in refs.values())),
                            ("storages", sum(s.numel for s in storages.values()))):
            if total > self.max_elements:
                raise CheckpointError(
                    f"{self.path}: the state dict's {what} hold {total} elements, more than "
                    f"the {self.max_elements} the model can use; refused before reading them")
        by_storage = collections.defaultdict(list)
        for name, ref in refs.items():
            by_storage[id(ref.storage)].append(name)
        out = {}
        for storage_id, names in by_storage.items():
            storage = storages[storage_id]
            nbytes = storage.numel * storage.dtype.itemsize
            raw = self.archive.read(f"{self.prefix}data/{storage.key}", nbytes, exact=nbytes)
            flat = np.frombuffer(raw, dtype=storage.dtype)
            for name in names:
                out[name] = _view(flat, refs[name], storage)
            del raw, flat
        return {name: out[name] for name in refs}

    def materialize(self, obj):
        """The structure with every tensor read (depth already bounded)."""
        refs = {}

        def collect(o):
            if isinstance(o, _TensorRef):
                refs.setdefault(id(o), o)
            elif isinstance(o, dict):
                for v in o.values():
                    collect(v)
            elif isinstance(o, (list, tuple)):
                for v in o:
                    collect(v)
            elif isinstance(o, argparse.Namespace):
                for v in vars(o).values():
                    collect(v)

        collect(obj)
        arrays = self.read_tensors({str(k): v for k, v in refs.items()})

        def rebuild(o):
            if isinstance(o, _TensorRef):
                return arrays[str(id(o))]
            if isinstance(o, dict):
                d = type(o)()
                for k, v in o.items():
                    d[k] = rebuild(v)
                return d
            if isinstance(o, (list, tuple)):
                return type(o)(rebuild(v) for v in o)
            if isinstance(o, argparse.Namespace):
                return argparse.Namespace(**{k: rebuild(v) for k, v in vars(o).items()})
            return o

        return rebuild(obj)


def _view(flat, ref, storage):
    """The tensor `ref` declares, from its storage's elements (bounds checked already)."""
    itemsize = flat.dtype.itemsize
    contiguous = tuple(int(np.prod(ref.shape[i + 1:], dtype=object)) if n > 1 else 0
                       for i, n in enumerate(ref.shape))
    if ref.size == 0:
        array = np.zeros(ref.shape, flat.dtype)
    elif ref.stride == contiguous or ref.size == 1:
        array = flat[ref.offset:ref.offset + ref.size].reshape(ref.shape)
    else:
        array = np.array(np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride), writeable=False))
    if storage.dtype_name == "BFloat16Storage":  # the upper half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def read_checkpoint(path, max_elements=None):
    """Return the object stored in a `torch.save` zip file, tensors as numpy arrays."""
    checkpoint = _Checkpoint(path, max_elements)
    try:
        return checkpoint.materialize(checkpoint.root)
    finally:
        checkpoint.close()


_WRAPPERS = ("state_dict", "model", "model_ema", "state_dict_ema", "ema", "module")


def _is_tensor(x):
    return isinstance(x, (np.ndarray, _TensorRef))


def extract_state_dict(obj, source="checkpoint"):
    """The `{name: tensor}` state dict inside the layouts trainers write.

    Accepts a raw state dict, `{"model": ...}` (DeiT), `{"state_dict": ...}` (timm and
    others), EMA copies, and `module.`-prefixed keys (DataParallel). Non-tensor entries
    beside the tensors (metadata, counters) are left out.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {_describe(obj)}")
    if not any(_is_tensor(v) for v in obj.values()):
        for wrapper in _WRAPPERS:
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and any(_is_tensor(v) for v in inner.values()):
                obj = inner
                break
    tensors = {k: v for k, v in obj.items() if _is_tensor(v)}
    if not tensors:
        keys = [_describe(k) for k in list(obj)[:10]]
        raise CheckpointError(f"{source}: no tensors found; top-level keys are "
                              f"{', '.join(keys) or 'none'}")
    bad = next((k for k in tensors
                if not (isinstance(k, str) and k.isprintable() and len(k) <= 300)), None)
    if bad is not None:  # (the key goes into later messages: one printable line)
        raise CheckpointError(f"{source}: tensor key {_describe(bad)} is not a parameter "
                              "name (a string of printable characters)")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_state_dict(path, max_elements=None):
    """Read a checkpoint file and return its state dict as `{name: numpy array}`.

    `max_elements` bounds the tensors' total element count (what the model can use);
    anything declared beyond it is refused before it is read. Without it, the bound is
    `DEFAULT_MAX_ELEMENTS` and compressed members may not inflate far beyond their
    compressed size (see the module).
    """
    checkpoint = _Checkpoint(path, max_elements)
    try:
        return checkpoint.read_tensors(extract_state_dict(checkpoint.root, source=str(path)))
    finally:
        checkpoint.close()
