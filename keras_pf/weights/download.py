"""Getting registry weights into the local cache.

`fetch(weights_id, tag)` returns the cached converted file, getting it on first use from,
in order: the cache (`registry.cache_dir()`); the mirror of converted files
(`$KERAS_PF_WEIGHTS_URL/<file>`, only for files whose sha256 the registry records); the
original checkpoint (Google Drive through `gdown`, or an http(s) URL), converted once.
Downloads go to a temporary file in the cache directory and are renamed into place only
once complete and verified; a per-file lock (`filelock`) makes concurrent processes wait
for the first one's download instead of repeating it.

Limits (environment variables, in seconds or bytes):

- `KERAS_PF_DOWNLOAD_STALL_TIMEOUT` (default 60): no byte received for this long fails;
- `KERAS_PF_DOWNLOAD_DEADLINE` (default 3600): a download not complete by then fails,
  however slowly the server keeps trickling;
- `KERAS_PF_DOWNLOAD_MAX_BYTES`: the most a download may bring when the registry records
  no `size` for it (a recorded size is the cap otherwise); unset, the cap derives from
  the model's parameter count (`keras_pf.weights.download_bounds`);
- `KERAS_PF_DOWNLOAD_MIN_RATE` (default 32 KiB/s) and `KERAS_PF_DOWNLOAD_RATE_GRACE`
  (default 60 s): after the grace period, a download averaging less fails;
- `KERAS_PF_LOCK_TIMEOUT` (default: the deadline + 600): how long a process waits for
  another one's download of the same file before giving up.

Each file put into the cache gets an integrity record beside it (`FILE.sha256.json`,
see `keras_pf.weights.integrity`), checked whenever the file is fetched: a file that
differs from it is got again, with one line saying so.

Temporary files of a download are named after the file they become
(`.tmp_*<file>`, `.original-<file>-*.pth`, `.gdown-<file>-*`); a run killed mid-download
leaves them behind, and the next run for that file removes them once it holds its lock.
"""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from keras_pf.files import atomic_output
from keras_pf.weights import download_bounds, integrity, registry
from keras_pf.weights.download_bounds import MAX_BYTES_ENV  # noqa: F401  (the public name)
from keras_pf.weights.torch_reader import looks_like_html

CHUNK = 1 << 20
STALL_TIMEOUT_ENV = "KERAS_PF_DOWNLOAD_STALL_TIMEOUT"
DEADLINE_ENV = "KERAS_PF_DOWNLOAD_DEADLINE"
LOCK_TIMEOUT_ENV = "KERAS_PF_LOCK_TIMEOUT"
DEFAULT_STALL_TIMEOUT = 60.0
DEFAULT_DEADLINE = 3600.0
# Where a Google Drive id is downloaded from (a test points it at a local server).
GDRIVE_URL = "https://drive.google.com/uc?id={id}"


class WeightsDownloadError(OSError):
    """The weights could not be got; the message says what was tried and what to do."""


def _env_number(name, default):
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"${name} must be a positive number; it is {text!r}")
    return value


def stall_timeout():
    return _env_number(STALL_TIMEOUT_ENV, DEFAULT_STALL_TIMEOUT)


def deadline_seconds():
    return _env_number(DEADLINE_ENV, DEFAULT_DEADLINE)


def lock_timeout():
    return _env_number(LOCK_TIMEOUT_ENV, deadline_seconds() + 600.0)


def size_cap(recorded_size=None, params=None):
    """The most bytes a download may bring (see `download_bounds.size_cap`)."""
    return download_bounds.size_cap(recorded_size, params)[0]


class _Limits:
    """Deadline, size cap and minimum rate of one download; `check` raises once one is
    passed."""

    def __init__(self, what, max_bytes, params=None, min_rate=None, rate_grace=None):
        self.what = what
        self.max_bytes, self.cap_reason = download_bounds.size_cap(max_bytes, params)
        self.rate = download_bounds.RateFloor(what, min_rate, rate_grace)
        self.deadline = deadline_seconds()
        self.start = time.monotonic()

    def check(self, received):
        if received > self.max_bytes:
            raise WeightsDownloadError(
                f"{self.what}: more than {self.max_bytes} bytes, the most expected "
                f"({self.cap_reason}); the server sends something else than the checkpoint"
            )
        elapsed = time.monotonic() - self.start
        too_slow = self.rate.problem(received, elapsed)
        if too_slow and elapsed <= self.deadline:
            raise WeightsDownloadError(too_slow)
        if elapsed > self.deadline:
            raise WeightsDownloadError(
                f"{self.what}: not complete after {elapsed:.0f} s ({received} bytes received); "
                f"the network is too slow, try again later or raise ${DEADLINE_ENV} "
                f"(now {self.deadline:g} s)"
            )


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gdrive_id(source):
    """The Google Drive file id of a registry `source` `gdrive:<id>`; None for a URL."""
    return source[len("gdrive:"):] if source.startswith("gdrive:") else None


def source_url(source):
    """A human-usable URL of a registry `source` (`gdrive:<id>` or a URL)."""
    drive_id = gdrive_id(source)
    return GDRIVE_URL.format(id=drive_id) if drive_id else source


def mirror_url(info):
    base = os.environ.get(registry.MIRROR_ENV, "").strip()
    if not base or not info.get("sha256"):
        return None  # an unverifiable mirror file is never used
    return base.rstrip("/") + "/" + info["file"]


# --- downloading one file -----------------------------------------------------------

def _check_payload(path, expected_sha256, what):
    if looks_like_html(path):
        raise WeightsDownloadError(
            f"{what} returned a web page instead of the file (for Google Drive, usually its "
            "'download quota exceeded' or sign-in page)."
        )
    if expected_sha256:
        actual = sha256_of(path)
        if actual != expected_sha256.lower():
            raise WeightsDownloadError(
                f"{what}: sha256 mismatch (got {actual}, the registry records "
                f"{expected_sha256}); the file is corrupt or not the published one."
            )


def download_url(url, output, expected_sha256=None, progress=True, max_bytes=None,
                 params=None, min_rate=None, rate_grace=None):
    """Download `url` to `output` (written atomically), checking its length and sha256.
    Stall timeout, deadline, size cap (`max_bytes`, else derived from `params`, the
    model's parameter count) and minimum rate: see the module."""
    from tqdm import tqdm

    stall = stall_timeout()
    limits = _Limits(url, max_bytes, params, min_rate, rate_grace)
    with atomic_output(output) as tmp:
        received = 0
        try:
            with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=stall) as response:
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                limits.check(total or 0)
                # read1: whatever has arrived, so that a trickle is checked against the deadline
                read = getattr(response, "read1", response.read)
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=os.path.basename(output), disable=not progress) as bar:
                    while True:
                        try:
                            chunk = read(CHUNK)
                        except TimeoutError as error:
                            raise WeightsDownloadError(
                                f"{url}: no data for {stall:g} s after {received} bytes (the "
                                f"connection stalled); try again later or raise ${STALL_TIMEOUT_ENV}"
                            ) from error
                        except Exception as error:  # IncompleteRead, ConnectionResetError and kin
                            raise WeightsDownloadError(
                                f"{url}: connection broken after {received} bytes ({error})"
                            ) from error
                        if not chunk:
                            break
                        received += len(chunk)
                        limits.check(received)
                        f.write(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise WeightsDownloadError(
                    f"{url}: truncated download ({received} of {total} bytes)"
                )
        except urllib.error.HTTPError as error:
            raise WeightsDownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
        except TimeoutError as error:  # while connecting or waiting for the headers
            raise WeightsDownloadError(
                f"{url}: no answer within {stall:g} s; try again later or raise ${STALL_TIMEOUT_ENV}"
            ) from error
        except (urllib.error.URLError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise WeightsDownloadError(
                    f"{url}: no answer within {stall:g} s; try again later or raise ${STALL_TIMEOUT_ENV}"
                ) from error
            raise WeightsDownloadError(f"{url}: cannot connect ({reason})") from error
        _check_payload(tmp, expected_sha256, url)
    return output


# gdown runs in a child process, so that it can be stopped: requests' timeout only bounds
# each read, and a thread cannot be killed. The child leaves when its parent dies.
_GDOWN_CHILD = """
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(3)
threading.Thread(target=watch, daemon=True).start()
import gdown
url, output, quiet, timeout = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
sys.exit(0 if gdown.download(url=url, output=output, quiet=quiet, timeout=timeout) else 1)
"""


def _directory_size(directory):
    total = 0
    for entry in os.scandir(directory):
        with contextlib.suppress(OSError):
            total += entry.stat().st_size
    return total


def download_gdrive(file_id, output, expected_sha256=None, progress=True, max_bytes=None,
                    params=None, min_rate=None, rate_grace=None):
    """Download a Google Drive file with `gdown` (which gets past Drive's confirmation
    page for large files) to `output`, atomically, under the same stall timeout,
    deadline and size cap as `download_url`."""
    from tqdm import tqdm

    url = GDRIVE_URL.format(id=file_id)
    what = f"Google Drive file {file_id} ({url})"
    limits = _Limits(what, max_bytes, params, min_rate, rate_grace)
    # gdown keeps the received bytes of a failed download beside its output (for
    # resuming); a private directory, removed whatever happens, keeps them out of the cache.
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output)),
                                     prefix=f".gdown-{os.path.basename(output)}-") as directory:
        tmp = os.path.join(directory, "checkpoint")
        log_path = os.path.join(directory, "gdown.log")
        with open(log_path, "wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-c", _GDOWN_CHILD, url, tmp, "1", str(stall_timeout())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                with tqdm(unit="B", unit_scale=True, unit_divisor=1024,
                          desc=os.path.basename(output), disable=not progress) as bar:
                    while child.poll() is None:
                        time.sleep(0.2)
                        received = _directory_size(directory) - os.path.getsize(log_path)
                        bar.update(max(received - bar.n, 0))
                        limits.check(received)
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait()
        with open(log_path, "rb") as log:
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
        last = next((line for line in reversed(lines) if line), "no output")
        if child.returncode != 0 or not os.path.isfile(tmp) or not os.path.getsize(tmp):
            raise WeightsDownloadError(f"{what}: gdown could not download it to {output} ({last})")
        _check_payload(tmp, expected_sha256, what)
        os.replace(tmp, output)
    return output


def download_source(source, output, expected_sha256=None, progress=True, max_bytes=None,
                    params=None, min_rate=None, rate_grace=None):
    """Download a registry `source` (`gdrive:<id>` or an http(s) URL) to `output`."""
    drive_id = gdrive_id(source)
    bounds = (params, min_rate, rate_grace)
    if drive_id:
        return download_gdrive(drive_id, output, expected_sha256, progress, max_bytes, *bounds)
    if source.startswith(("http://", "https://", "file://")):
        return download_url(source, output, expected_sha256, progress, max_bytes, *bounds)
    raise ValueError(f"unsupported weights source {source!r} (expected gdrive:<id> or a URL)")


# --- the cache ------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path):
    """Hold `path`'s cache lock; while another process holds it, say so, and give up
    after `lock_timeout()`. Then remove what killed runs for `path` left behind: as
    long as the lock is held, no other process is writing them."""
    from filelock import FileLock, Timeout

    lock = FileLock(path + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        timeout = lock_timeout()
        print(f"Waiting for another process to finish getting {path} (it holds "
              f"{lock.lock_file}); giving up after {timeout:g} s (${LOCK_TIMEOUT_ENV})",
              file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise WeightsDownloadError(
                f"gave up after {timeout:g} s waiting for another process to finish getting "
                f"{path} (it holds the lock {lock.lock_file}); let it finish and try again, "
                f"or raise ${LOCK_TIMEOUT_ENV}"
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
    path = registry.weights_path(weights_id, tag)
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
        url = mirror_url(info)
        if url:
            try:
                download_url(url, path, info["sha256"], progress, info.get("size"),
                             params=entry.get("params"))
                integrity.record(path)
                return path
            except WeightsDownloadError as error:
                failures.append(f"mirror: {error}")
        elif os.environ.get(registry.MIRROR_ENV, "").strip():
            failures.append(f"mirror: not used, the registry records no sha256 for {info['file']} yet")
        try:
            _download_and_convert(weights_id, info, path, progress)
            integrity.record(path)
            return path
        except WeightsDownloadError as error:
            failures.append(f"original checkpoint: {error}")
        raise WeightsDownloadError(manual_steps(weights_id, tag, failures))


def _download_and_convert(weights_id, info, path, progress):
    from keras_pf.weights.convert import save_converted

    directory = os.path.dirname(path)
    fd, original = tempfile.mkstemp(dir=directory, prefix=f".original-{os.path.basename(path)}-",
                                    suffix=".pth")
    os.close(fd)
    try:
        model = registry.build_model(weights_id)  # first: its size bounds the download
        download_source(info["source"], original, info.get("source_sha256"), progress,
                        params=model.count_params())
        if progress:
            print(f"Converting {source_url(info['source'])} to {path}")
        save_converted(model, original, path)
    finally:
        if os.path.exists(original):
            os.remove(original)
    return path


def manual_steps(weights_id, tag, failures=()):
    """What was tried, and how to install the weights by hand."""
    _, tag, info = registry.resolve(weights_id, tag)
    lines = [f"Could not get the weights '{tag}' of {weights_id} ({info.get('note') or info['file']})."]
    lines += [f"  - {failure}" for failure in failures]
    lines += [
        "To install them by hand:",
        f"  1. download the original checkpoint {source_url(info['source'])}"
        + (" (in a browser, if Drive asks to confirm)" if gdrive_id(info["source"]) else ""),
        f"  2. keras-pf weights import PATH --model {weights_id} --tag {tag}",
        "     (or pass weights=PATH to the constructor: a .pth is converted on the fly)",
        f"The converted file is cached as {registry.weights_path(weights_id, tag)}.",
    ]
    return "\n".join(lines)


def import_file(path, weights_id, tag, progress=False):
    """Put `path` (an original checkpoint, or a converted `.weights.h5`) into the cache
    as `weights_id`/`tag`; an original is converted, a converted file is checked against
    the registry's sha256 and by loading it. Returns the cached path."""
    from keras_pf.weights import TORCH_SUFFIXES, load_keras_weights
    from keras_pf.weights.convert import save_converted

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    _, tag, info = registry.resolve(weights_id, tag)
    target = registry.weights_path(weights_id, tag)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _locked(target):
        if str(path).endswith(TORCH_SUFFIXES):
            _check_payload(path, info.get("source_sha256"), path)
            save_converted(registry.build_model(weights_id), path, target)
            integrity.record(target)
            return target
        if not str(path).endswith(".weights.h5"):
            raise ValueError(f"{path}: expected an original checkpoint (.pth) or a .weights.h5 file")
        try:
            _check_payload(path, info.get("sha256"), path)
        except WeightsDownloadError as error:
            raise WeightsDownloadError(
                f"{error} Import the original checkpoint (.pth) instead: it is converted here."
            ) from error
        load_keras_weights(registry.build_model(weights_id), path)  # raises if it does not fit
        with atomic_output(target) as tmp:
            shutil.copyfile(path, tmp)
        integrity.record(target)
    return target


def verify(weights_id, tag):
    """Check the cached `weights_id`/`tag`: sha256 (if recorded) and loading it into the
    model. Returns `(path, sha256, status)`; raises if it is missing or broken."""
    from keras_pf.weights import load_keras_weights

    _, tag, info = registry.resolve(weights_id, tag)
    path = registry.cached_weights_path(weights_id, tag)
    if path is None:
        raise FileNotFoundError(
            f"{weights_id}/{tag} is not cached ({registry.weights_path(weights_id, tag)}); "
            f"run `keras-pf weights download {weights_id} --tag {tag}`"
        )
    digest = integrity.sha256_of(path)
    if info.get("sha256") and digest != info["sha256"]:
        raise WeightsDownloadError(
            f"{path}: sha256 {digest} differs from the registry's {info['sha256']}; delete "
            f"it and run `keras-pf weights download {weights_id} --tag {tag}`"
        )
    why = integrity.problem(path)
    if why:
        raise WeightsDownloadError(
            f"{path}: {why}; run `keras-pf weights download {weights_id} --tag {tag}` to "
            "get it again")
    recorded = integrity.read_sidecar(path) is not None
    load_keras_weights(registry.build_model(weights_id), path)
    if not recorded:
        integrity.record(path)  # it loads: recorded, checked from now on
    status = ("matches its integrity record" if recorded else "integrity record written now")
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
