"""Getting registry weights into the local cache.

`fetch(weights_id, tag)` returns the cached converted file, getting it on first use from,
in order: the cache (`registry.cache_dir()`); the mirror of converted files
(`$KERAS_PF_WEIGHTS_URL/<file>`, only for files whose sha256 the registry records); the
original checkpoint (Google Drive through `gdown`, or an http(s) URL), converted once.
Downloads go to a temporary file in the cache directory and are renamed into place only
once complete and verified; a per-file lock (`filelock`) makes concurrent processes wait
for the first one's download instead of repeating it.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request

from keras_pf.files import atomic_output
from keras_pf.weights import registry
from keras_pf.weights.torch_reader import looks_like_html

CHUNK = 1 << 20


class WeightsDownloadError(OSError):
    """The weights could not be got; the message says what was tried and what to do."""


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
    return f"https://drive.google.com/uc?id={drive_id}" if drive_id else source


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


def download_url(url, output, expected_sha256=None, progress=True):
    """Download `url` to `output` (written atomically), checking its length and sha256."""
    from tqdm import tqdm

    with atomic_output(output) as tmp:
        try:
            with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                received = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=os.path.basename(output), disable=not progress) as bar:
                    while True:
                        try:
                            chunk = response.read(CHUNK)
                        except Exception as error:  # http.client.IncompleteRead and kin
                            raise WeightsDownloadError(
                                f"{url}: connection broken after {received} bytes ({error})"
                            ) from error
                        if not chunk:
                            break
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise WeightsDownloadError(
                    f"{url}: truncated download ({received} of {total} bytes)"
                )
        except urllib.error.HTTPError as error:
            raise WeightsDownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise WeightsDownloadError(f"{url}: cannot connect ({reason})") from error
        _check_payload(tmp, expected_sha256, url)
    return output


def download_gdrive(file_id, output, expected_sha256=None, progress=True):
    """Download a Google Drive file with `gdown` (which gets past Drive's confirmation
    page for large files) to `output`, atomically."""
    import gdown

    what = f"Google Drive file {file_id}"
    # gdown keeps the received bytes of a failed download beside its output (for
    # resuming); a private directory, removed whatever happens, keeps them out of the cache.
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output)),
                                     prefix=".gdown-") as directory:
        tmp = os.path.join(directory, "checkpoint")
        try:
            result = gdown.download(id=file_id, output=tmp, quiet=not progress)
        except Exception as error:  # gdown raises its own and requests' errors
            raise WeightsDownloadError(f"{what}: {type(error).__name__}: {error}") from error
        if result is None or not os.path.isfile(tmp) or not os.path.getsize(tmp):
            raise WeightsDownloadError(f"{what}: gdown could not download it")
        _check_payload(tmp, expected_sha256, what)
        os.replace(tmp, output)
    return output


def download_source(source, output, expected_sha256=None, progress=True):
    """Download a registry `source` (`gdrive:<id>` or an http(s) URL) to `output`."""
    drive_id = gdrive_id(source)
    if drive_id:
        return download_gdrive(drive_id, output, expected_sha256, progress)
    if source.startswith(("http://", "https://", "file://")):
        return download_url(source, output, expected_sha256, progress)
    raise ValueError(f"unsupported weights source {source!r} (expected gdrive:<id> or a URL)")


# --- the cache ------------------------------------------------------------------------

def _lock(path):
    from filelock import FileLock

    return FileLock(path + ".lock")


def fetch(weights_id, tag, progress=True):
    """The cached converted file of `weights_id`/`tag`, got first if it is not cached."""
    entry, tag, info = registry.resolve(weights_id, tag)
    path = registry.weights_path(weights_id, tag)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _lock(path):
        if os.path.exists(path):  # another process got it while we waited
            return path
        failures = []
        url = mirror_url(info)
        if url:
            try:
                return download_url(url, path, info["sha256"], progress)
            except WeightsDownloadError as error:
                failures.append(f"mirror: {error}")
        elif os.environ.get(registry.MIRROR_ENV, "").strip():
            failures.append(f"mirror: not used, the registry records no sha256 for {info['file']} yet")
        try:
            _download_and_convert(weights_id, info, path, progress)
            return path
        except WeightsDownloadError as error:
            failures.append(f"original checkpoint: {error}")
        raise WeightsDownloadError(manual_steps(weights_id, tag, failures))


def _download_and_convert(weights_id, info, path, progress):
    from keras_pf.weights.convert import save_converted

    directory = os.path.dirname(path)
    fd, original = tempfile.mkstemp(dir=directory, prefix=".original-", suffix=".pth")
    os.close(fd)
    try:
        download_source(info["source"], original, info.get("source_sha256"), progress)
        if progress:
            print(f"Converting {source_url(info['source'])} to {path}")
        save_converted(registry.build_model(weights_id), original, path)
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
    with _lock(target):
        if str(path).endswith(TORCH_SUFFIXES):
            _check_payload(path, info.get("source_sha256"), path)
            save_converted(registry.build_model(weights_id), path, target)
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
    digest = sha256_of(path)
    if info.get("sha256") and digest != info["sha256"]:
        raise WeightsDownloadError(
            f"{path}: sha256 {digest} differs from the registry's {info['sha256']}; delete "
            f"it and run `keras-pf weights download {weights_id} --tag {tag}`"
        )
    load_keras_weights(registry.build_model(weights_id), path)
    status = "sha256 matches the registry" if info.get("sha256") else "no sha256 recorded yet"
    return path, digest, status
