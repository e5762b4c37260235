"""The local weights cache, `$KERAS_HOME/models/keras_pf`: where each registry file
lives, and getting it there.

`fetch(weights_id, tag)` returns the cached converted file, getting it on first use from,
in order: the cache; the mirror of converted files (`$KERAS_PF_WEIGHTS_URL/<file>`, only
for files whose sha256 the registry records); the original checkpoint (Google Drive
through `gdown`, or an http(s) URL, by `download`), converted once. A per-file lock
(`filelock`) makes concurrent processes wait for the first one's download instead of
repeating it. `import_file` and `verify` serve `keras-pf weights import/verify`.

Each file put into the cache gets an integrity record beside it (`FILE.sha256.json`,
see `weights.integrity`), checked whenever the file is fetched: a file that differs
from it is got again, with one line saying so.
"""

import contextlib
import os
import re
import shutil
import sys

from keras_pf import tempfiles
from keras_pf.files import atomic_output
from keras_pf.models.resolve import weights_architecture
from keras_pf.weights import download, integrity, registry
from keras_pf.weights.keras_file import TORCH_SUFFIXES, load_keras_weights


def cache_dir():
    """`$KERAS_HOME/models/keras_pf` (default `~/.keras/models/keras_pf`), as Keras caches."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", "keras_pf")


def weights_path(weights_id, tag):
    """Where the converted file of `weights_id`/`tag` lives in the cache (may not exist)."""
    _, _, info = registry.resolve(weights_id, tag)
    return os.path.join(cache_dir(), info["file"])


def cached_weights_path(weights_id, tag):
    """The cached converted file of `weights_id`/`tag` if it is there, else None."""
    try:
        path = weights_path(weights_id, tag)
    except registry.UnknownWeightsError:
        return None
    return path if os.path.exists(path) else None


@contextlib.contextmanager
def _locked(path):
    """Hold `path`'s cache lock; while another process holds it, say so, and give up
    after `download.lock_timeout()`. Then remove what killed runs for `path` left behind: as
    long as the lock is held, no other process is writing them."""
    from filelock import FileLock, Timeout

    lock = FileLock(path + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        timeout = download.lock_timeout()
        print(f"Waiting for another process to finish getting {path} (it holds "
              f"{lock.lock_file}); giving up after {timeout:g} s (${download.LOCK_TIMEOUT_ENV})",
              file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise download.WeightsDownloadError(
                f"gave up after {timeout:g} s waiting for another process to finish getting "
                f"{path} (it holds the lock {lock.lock_file}); let it finish and try again, "
                f"or raise ${download.LOCK_TIMEOUT_ENV}"
            ) from None
    try:
        remove_leftovers(path)
        yield
    finally:
        lock.release()


def leftovers(path):
    """Temporary files and folders of unfinished downloads of `path` in its directory."""
    directory, base = os.path.split(os.path.abspath(path))
    name = re.escape(base)
    pattern = re.compile(
        rf"^(\.tmp_\w{{8}}{name}|(\.tmp_\w{{8}})?\.original-{name}-\w+\.pth|\.gdown-(\.original-{name}-\w+\.pth|{name})-\w+)$"
    )
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory)) if pattern.match(n)]


def remove_leftovers(path):
    for leftover in leftovers(path):
        if os.path.isdir(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


_UNRECORDED = "no integrity record"


def _cached_problem(path, info):
    """Why the cached `path` may not be used: a reason (it differs from its integrity
    record or the registry's sha256), `_UNRECORDED` (no record: cached by an earlier
    version or by hand; recorded once it loads), or None (it matches its record)."""
    try:
        why = integrity.problem(path, info.get("sha256"))
        recorded = integrity.read_sidecar(path) is not None
    except integrity.IntegrityError as error:
        return f"{error} (the record)"
    return why or (None if recorded else _UNRECORDED)


def fetch(weights_id, tag, progress=True):
    """The cached converted file of `weights_id`/`tag`, got first if it is not cached.
    A cached file that differs from its integrity record is got again, saying so."""
    entry, tag, info = registry.resolve(weights_id, tag)
    path = weights_path(weights_id, tag)
    if os.path.exists(path) and _cached_problem(path, info) in (None, _UNRECORDED):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _locked(path):
        if os.path.exists(path):  # another process got it while we waited, or it changed
            why = _cached_problem(path, info)
            if why in (None, _UNRECORDED):
                return path
            print(f"{path}: {why}; getting it again", file=sys.stderr, flush=True)
            integrity.remove(path)
        failures = []
        url = download.mirror_url(info)
        if url:
            try:
                download.download_url(url, path, info["sha256"], progress, info.get("size"),
                                      params=entry.get("params"))
                integrity.record(path)
                return path
            except download.WeightsDownloadError as error:
                failures.append(f"mirror: {error}")
        elif os.environ.get(registry.MIRROR_ENV, "").strip():
            failures.append(f"mirror: not used, the registry records no sha256 for {info['file']} yet")
        try:
            _download_and_convert(weights_id, info, path, progress)
            integrity.record(path)
            return path
        except download.WeightsDownloadError as error:
            failures.append(f"original checkpoint: {error}")
        raise download.WeightsDownloadError(manual_steps(weights_id, tag, failures))


def _download_and_convert(weights_id, info, path, progress):
    from keras_pf.weights.convert import save_converted

    directory = os.path.dirname(path)
    model = weights_architecture(weights_id)  # first: its size bounds the download
    # unnamed where the filesystem allows (a kill leaves nothing), else `.original-*`
    with tempfiles.scratch(directory, f".original-{os.path.basename(path)}-", ".pth") as original:
        download.download_source(info["source"], original, info.get("source_sha256"), progress,
                                 params=model.count_params())
        if progress:
            print(f"Converting {download.source_url(info['source'])} to {path}")
        save_converted(model, original, path)
    return path


def manual_steps(weights_id, tag, failures=()):
    """What was tried, and how to install the weights by hand."""
    _, tag, info = registry.resolve(weights_id, tag)
    lines = [f"Could not get the weights '{tag}' of {weights_id} ({info.get('note') or info['file']})."]
    lines += [f"  - {failure}" for failure in failures]
    lines += [
        "To install them by hand:",
        f"  1. download the original checkpoint {download.source_url(info['source'])}"
        + (" (in a browser, if Drive asks to confirm)" if download.gdrive_id(info["source"]) else ""),
        f"  2. keras-pf weights import PATH --model {weights_id} --tag {tag}",
        "     (or pass weights=PATH to the constructor: a .pth is converted on the fly)",
        f"The converted file is cached as {weights_path(weights_id, tag)}.",
    ]
    return "\n".join(lines)


def import_file(path, weights_id, tag, progress=False):
    """Put `path` (an original checkpoint, or a converted `.weights.h5`) into the cache
    as `weights_id`/`tag`; an original is converted, a converted file is checked against
    the registry's sha256 and by loading it. Returns the cached path."""
    from keras_pf.weights.convert import save_converted

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    _, tag, info = registry.resolve(weights_id, tag)
    target = weights_path(weights_id, tag)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _locked(target):
        if str(path).endswith(TORCH_SUFFIXES):
            download._check_payload(path, info.get("source_sha256"), path)
            save_converted(weights_architecture(weights_id), path, target)
            integrity.record(target)
            return target
        if not str(path).endswith(".weights.h5"):
            raise ValueError(f"{path}: expected an original checkpoint (.pth) or a .weights.h5 file")
        try:
            download._check_payload(path, info.get("sha256"), path)
        except download.WeightsDownloadError as error:
            raise download.WeightsDownloadError(
                f"{error} Import the original checkpoint (.pth) instead: it is converted here."
            ) from error
        load_keras_weights(weights_architecture(weights_id), path)  # raises if it does not fit
        with atomic_output(target) as tmp:
            shutil.copyfile(path, tmp)
        integrity.record(target)
    return target


def verify(weights_id, tag):
    """Check the cached `weights_id`/`tag`: sha256 (if recorded) and loading it into the
    model. Returns `(path, sha256, status)`; raises if it is missing or broken."""
    _, tag, info = registry.resolve(weights_id, tag)
    path = cached_weights_path(weights_id, tag)
    if path is None:
        raise FileNotFoundError(
            f"{weights_id}/{tag} is not cached ({weights_path(weights_id, tag)}); "
            f"run `keras-pf weights download {weights_id} --tag {tag}`"
        )
    digest = integrity.sha256_of(path)
    if info.get("sha256") and digest != info["sha256"]:
        raise download.WeightsDownloadError(
            f"{path}: sha256 {digest} differs from the registry's {info['sha256']}; delete "
            f"it and run `keras-pf weights download {weights_id} --tag {tag}`"
        )
    why = integrity.problem(path)
    if why:
        raise download.WeightsDownloadError(
            f"{path}: {why}; run `keras-pf weights download {weights_id} --tag {tag}` to "
            "get it again")
    recorded = integrity.read_sidecar(path) is not None
    load_keras_weights(weights_architecture(weights_id), path)
    if not recorded:
        integrity.record(path)  # it loads: recorded, checked from now on
    status = "matches its integrity record" if recorded else "integrity record written now"
    status += ", and the registry's sha256" if info.get("sha256") else "; no sha256 in the registry yet"
    return path, digest, status


def record_if_unrecorded(path):
    """After a cached file without an integrity record (cached by an earlier version, or
    by hand) has loaded: record it, saying so; it is checked from now on."""
    if integrity.read_sidecar(path) is None:
        integrity.record(path)
        print(f"{path}: had no integrity record (cached by an earlier keras_pf or by hand); "
              "recorded its sha256, checked on every load from now on",
              file=sys.stderr, flush=True)
