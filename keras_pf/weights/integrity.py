"""Integrity sidecars: the sha256 and size of a file, recorded beside it when it is
written and checked whenever it is read back.

HDF5 stores no checksum of its data: 64 bytes flipped in a `.weights.h5` (a bad disk, an
interrupted copy, a broken mirror) load without an error and move a model's outputs.
The files the package writes and reads back carry a sidecar `FILE.sha256.json`
(`{"file": name, "size": bytes, "sha256": hex}`, written atomically): the converted
weights in the cache, fine-tuning's checkpoints and `model.keras`, and any file a user
hashes with `keras-pf weights hash FILE`. Loading a file whose sidecar disagrees with it
is an error naming the file (the cache gets its file again instead, saying so).

A file is hashed at most once per process while its size, modification time and inode
stay the same (`check_sidecar` after `fetch` costs nothing more).
"""

import hashlib
import json
import os

from keras_pf.files import write_atomic

SUFFIX = ".sha256.json"
_CHUNK = 1 << 20
_verified = {}  # (path, size, mtime, ctime, inode) -> sha256, this process's checks


class IntegrityError(ValueError):
    """A file differs from its integrity sidecar (or the sidecar is unreadable)."""


def sidecar_path(path):
    return os.fspath(path) + SUFFIX


def _stat_key(path):
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def sha256_of(path):
    """The sha256 (hex) of the file at `path`, remembered while the file is unchanged."""
    key = _stat_key(path)
    if key in _verified:
        return _verified[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    _verified[key] = digest.hexdigest()
    return _verified[key]


def record(path):
    """Write `path`'s sidecar (atomically); returns the record."""
    path = os.fspath(path)
    entry = {"file": os.path.basename(path), "size": os.path.getsize(path),
             "sha256": sha256_of(path)}
    write_atomic(sidecar_path(path), json.dumps(entry, indent=1) + "\n")
    return entry


def read_sidecar(path):
    """The record beside `path`, or None if there is none."""
    side = sidecar_path(path)
    try:
        with open(side, "rb") as f:
            data = f.read(4096)
    except FileNotFoundError:
        return None
    try:
        entry = json.loads(data)
        ok = (isinstance(entry, dict) and type(entry.get("size")) is int
              and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
    except ValueError:
        ok = False
    if not ok:
        raise IntegrityError(f"{side} (the integrity record of {path}) is not a valid record; "
                             f"delete it, or write it again with `keras-pf weights hash {path}`")
    return entry


def problem(path, expected_sha256=None):
    """Why `path` differs from its sidecar (or from `expected_sha256`), or None if it
    matches; None also when there is neither a sidecar nor an expected sha256."""
    path = os.fspath(path)
    entry = read_sidecar(path)
    size = os.path.getsize(path)
    if entry is not None and entry["size"] != size:
        return (f"it holds {size} bytes, its integrity record {entry['size']} (the file was "
                "cut short or changed after it was written)")
    expected = [(e, where) for e, where in ((entry and entry["sha256"], "its integrity record"),
                                            (expected_sha256, "the registry")) if e]
    if not expected:
        return None
    actual = sha256_of(path)
    for sha, where in expected:
        if actual != sha.lower():
            return (f"its sha256 {actual[:16]}... differs from {where}'s {sha[:16]}... (the "
                    "file changed after it was written: a bad disk, an interrupted copy, an edit)")
    return None


def check_sidecar(path):
    """Raise `IntegrityError` if `path` has a sidecar it does not match."""
    path = os.fspath(path)
    if not os.path.exists(sidecar_path(path)):
        return
    why = problem(path)
    if why:
        raise IntegrityError(
            f"{path}: {why}; get or write the file again (if you changed it on purpose, "
            f"record it anew with `keras-pf weights hash {path}`)")


def remove(path):
    """Remove `path` and its sidecar (whichever exist)."""
    for p in (os.fspath(path), sidecar_path(path)):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def verify_file(path):
    """`(ok, message)`: `path` against its integrity record (`keras-pf weights verify
    FILE`); a `ValueError` if it has none."""
    path = os.fspath(path)
    if read_sidecar(path) is None:
        raise ValueError(f"{path} has no integrity record ({sidecar_path(path)}); write one "
                         f"with `keras-pf weights hash {path}`")
    why = problem(path)
    if why:
        return False, f"{path}: FAILED {why}"
    return True, f"{path}: OK sha256={sha256_of(path)} (matches its integrity record)"
