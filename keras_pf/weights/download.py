"""Download transport: one URL or Google Drive file to a local path, bounded and
verified (the cache's policy, which source to try and when, is `weights.cache`).

Downloads go to a temporary file and are put in place only once complete and verified.

Limits (environment variables, in seconds or bytes):

- `KERAS_PF_DOWNLOAD_STALL_TIMEOUT` (default 60): no byte received for this long fails;
- `KERAS_PF_DOWNLOAD_DEADLINE` (default 3600): a download not complete by then fails,
  however slowly the server keeps trickling;
- `KERAS_PF_DOWNLOAD_MAX_BYTES`: the most a download may bring when the registry records
  no `size` for it (a recorded size is the cap otherwise); unset, the cap derives from
  the model's parameter count (`weights.download_bounds`);
- `KERAS_PF_DOWNLOAD_MIN_RATE` (default 32 KiB/s) and `KERAS_PF_DOWNLOAD_RATE_GRACE`
  (default 60 s): after the grace period, a download averaging less fails;
- `KERAS_PF_LOCK_TIMEOUT` (default: the deadline + 600): how long a process waits for
  another one's download of the same file before giving up.

Where the filesystem allows, a download is written to an unnamed file
(`keras_pf.files.atomic_output`, `keras_pf.tempfiles`) and gdown's folder lives in the
process's private folder under `$TMPDIR/keras_pf-<uid>/`: a run killed mid-download
leaves nothing in the cache. Elsewhere temporary files are named after the file they
become (`.tmp_*<file>`, `.original-<file>-*.pth`, `.gdown-<file>-*`); a killed run leaves
them, and the next run for that file removes them once it holds its lock
(`cache.leftovers`).
"""

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from keras_pf.files import atomic_output
from keras_pf.weights import download_bounds, registry
from keras_pf.weights.download_bounds import DEFAULT_MAX_BYTES, MAX_BYTES_ENV  # noqa: F401
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
    # resuming) and renames its output into place: a folder beside `output`, removed
    # whatever happens, keeps them out of the cache. The cache's `output` is a
    # `tempfiles.scratch` path, so this folder is in the process's private folder under
    # $TMPDIR (removed by the next run after a kill), or, without unnamed files, a
    # `.gdown-*` folder in the cache (removed by the next run for that file).
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
