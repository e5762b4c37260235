"""`weights=<tag>` end to end against a real HTTP server on 127.0.0.1: download, convert,
cache, mirror, failures (sha256 mismatch, truncation, refusal, HTML page) and two
processes at once. The registry is pointed at the server by a runtime entry whose
source is a small parity checkpoint of the original code."""

import collections
import copy
import http.server
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

from conftest import ParityCase

CASE = "resnet_hybrid_64"
WEIGHTS_ID = "test_pf_resnet"
TAG = "tiny"
CACHED = [f"{WEIGHTS_ID}_{TAG}.weights.h5", f"{WEIGHTS_ID}_{TAG}.weights.h5.sha256.json"]


def build_case_model(**kwargs):
    """The registry's builder for the test entry: the parity case's architecture."""
    return ParityCase(CASE).build(**kwargs)


def register_test_entry(source, **kwargs):
    from keras_pf.weights import registry

    return registry.register_weights(WEIGHTS_ID, TAG, source, model=build_case_model,
                                     imagenet=True, note="parity checkpoint", **kwargs)


class Server:
    """Serves `files` (URL path -> bytes) and counts requests per path. `mode` (or
    `path_modes[path]`): "ok", "truncated" (announces the full length, sends half),
    "refuse" (403 for everything), "html" (a Drive-like quota page), "html-bom" (the
    same after a UTF-8 byte-order mark), "trickle" (one byte every 0.2 s), "stall" (the
    headers, then nothing), "endless" (no length, bytes forever); `delay` seconds
    before answering."""

    def __init__(self, files):
        self.files, self.mode, self.delay = dict(files), "ok", 0.0
        self.path_modes = {}
        self.requests = collections.Counter()
        self.stopped = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests[self.path] += 1
                time.sleep(server.delay)
                mode = server.path_modes.get(self.path, server.mode)
                if mode == "refuse" or self.path not in server.files:
                    self.send_error(403 if mode == "refuse" else 404)
                    return
                body = server.files[self.path]
                if mode in ("html", "html-bom"):
                    body = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
                    body = b"\xef\xbb\xbf" + body if mode == "html-bom" else body
                self.send_response(200)
                if mode != "endless":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if mode == "trickle":
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            if server.stopped.wait(0.2):
                                return
                    elif mode == "stall":
                        server.stopped.wait(60)
                    elif mode == "endless":
                        while not server.stopped.is_set():
                            self.wfile.write(b"\0" * 65536)
                    else:
                        self.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    case = ParityCase(CASE)
    s = Server({"/checkpoint.pth": case.checkpoint.read_bytes()})
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache ($KERAS_HOME) and a registry copy the test may change."""
    from keras_pf.weights import registry

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(registry.MIRROR_ENV, raising=False)
    monkeypatch.setattr(registry, "WEIGHTS", copy.deepcopy(registry.WEIGHTS))
    return tmp_path / "keras_home" / "models" / "keras_pf"


def cache_files(cache):
    """Everything in the cache but lock files (locks are not weights)."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.rglob("*") if not p.name.endswith(".lock"))


def load_by_tag(tag="imagenet"):
    from keras_pf.weights import load_weights

    model = build_case_model()
    load_weights(model, tag, weights_id=WEIGHTS_ID)
    return model


def test_first_use_downloads_converts_and_caches_then_needs_no_server(server, cache):
    case = ParityCase(CASE)
    register_test_entry(server.url + "/checkpoint.pth")
    model = load_by_tag()
    assert server.requests["/checkpoint.pth"] == 1
    assert cache_files(cache) == CACHED
    np.testing.assert_allclose(np.asarray(model(case.input_nhwc)), case.logits, rtol=0, atol=1e-4)

    server.close()  # second use: from the cache, no server at all
    again = load_by_tag(TAG)
    np.testing.assert_allclose(np.asarray(again(case.input_nhwc)), case.logits, rtol=0, atol=1e-4)
    assert server.requests["/checkpoint.pth"] == 1


def test_cached_weights_load_into_a_headless_model_of_another_size(server, cache):
    from keras_pf.weights import load_weights

    register_test_entry(server.url + "/checkpoint.pth")
    full = load_by_tag()
    backbone = build_case_model(include_top=False, input_shape=(96, 96, 3))
    load_weights(backbone, "imagenet", weights_id=WEIGHTS_ID)
    for layer in ("conv1_conv", "conv5_block1_3_bn"):
        for a, b in zip(full.get_layer(layer).weights, backbone.get_layer(layer).weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _assert_fails_cleanly(cache, *needles):
    from keras_pf.weights import load_weights
    from keras_pf.weights.download import WeightsDownloadError

    model = build_case_model()
    before = [np.asarray(w).copy() for w in model.weights]
    with pytest.raises(WeightsDownloadError) as error:
        load_weights(model, "imagenet", weights_id=WEIGHTS_ID)
    message = str(error.value)
    for needle in needles + ("keras-pf weights import PATH", f"--model {WEIGHTS_ID} --tag {TAG}"):
        assert needle in message, message
    assert cache_files(cache) == []
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.asarray(new))
    return message


def test_sha256_mismatch_is_an_error_and_leaves_the_cache_unchanged(server, cache):
    register_test_entry(server.url + "/checkpoint.pth", source_sha256="0" * 64)
    _assert_fails_cleanly(cache, "sha256 mismatch", server.url + "/checkpoint.pth")


def test_truncated_download_is_an_error_and_leaves_the_cache_unchanged(server, cache):
    server.mode = "truncated"
    register_test_entry(server.url + "/checkpoint.pth")
    message = _assert_fails_cleanly(cache, server.url + "/checkpoint.pth")
    assert "truncated" in message or "broken" in message, message


def test_refusing_server_is_an_error_and_leaves_the_cache_unchanged(server, cache):
    server.mode = "refuse"
    register_test_entry(server.url + "/checkpoint.pth")
    _assert_fails_cleanly(cache, "HTTP 403", server.url + "/checkpoint.pth")


def test_offline_is_an_error_naming_the_file_and_the_manual_steps(server, cache):
    url = server.url + "/checkpoint.pth"
    server.close()
    register_test_entry(url)
    _assert_fails_cleanly(cache, "cannot connect", url)


def test_html_page_instead_of_the_checkpoint_is_said_plainly(server, cache):
    server.mode = "html"
    register_test_entry(server.url + "/checkpoint.pth")
    _assert_fails_cleanly(cache, "web page instead of the file")


def _converted_bytes(tmp_path):
    from keras_pf.weights.convert import save_converted

    path = tmp_path / "converted.weights.h5"
    save_converted(build_case_model(), str(ParityCase(CASE).checkpoint), str(path))
    return path.read_bytes()


def test_mirror_is_used_when_its_sha256_matches(server, cache, tmp_path, monkeypatch):
    import hashlib

    from keras_pf.weights import registry

    data = _converted_bytes(tmp_path)
    server.files[f"/mirror/{WEIGHTS_ID}_{TAG}.weights.h5"] = data
    monkeypatch.setenv(registry.MIRROR_ENV, server.url + "/mirror/")
    register_test_entry(server.url + "/checkpoint.pth", sha256=hashlib.sha256(data).hexdigest())
    model = load_by_tag()
    case = ParityCase(CASE)
    np.testing.assert_allclose(np.asarray(model(case.input_nhwc)), case.logits, rtol=0, atol=1e-4)
    assert server.requests[f"/mirror/{WEIGHTS_ID}_{TAG}.weights.h5"] == 1
    assert server.requests["/checkpoint.pth"] == 0


def test_mirror_with_wrong_sha256_falls_back_to_the_original(server, cache, tmp_path, monkeypatch):
    from keras_pf.weights import registry

    server.files[f"/mirror/{WEIGHTS_ID}_{TAG}.weights.h5"] = _converted_bytes(tmp_path)
    monkeypatch.setenv(registry.MIRROR_ENV, server.url + "/mirror")
    register_test_entry(server.url + "/checkpoint.pth", sha256="f" * 64)
    load_by_tag()
    assert server.requests[f"/mirror/{WEIGHTS_ID}_{TAG}.weights.h5"] == 1
    assert server.requests["/checkpoint.pth"] == 1
    assert cache_files(cache) == CACHED


def test_two_processes_at_once_download_once(server, cache, tmp_path):
    server.delay = 1.0  # keep the first download in flight while the second asks
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here, os.path.dirname(here), os.path.join(os.path.dirname(here), "helpers")]
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {paths!r}
        from test_weights_download import register_test_entry
        from keras_pf.weights import cache, download
        register_test_entry({server.url + "/checkpoint.pth"!r})
        print(cache.fetch({WEIGHTS_ID!r}, "imagenet", progress=False))
    """)
    env = dict(os.environ, KERAS_HOME=str(cache.parent.parent), TF_CPP_MIN_LOG_LEVEL="3")
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert paths == {str(cache / f"{WEIGHTS_ID}_{TAG}.weights.h5")}
    assert server.requests["/checkpoint.pth"] == 1
    assert cache_files(cache) == CACHED


def test_cli_import_then_verify(cache, capsys):
    import keras_pf_cli as cli

    register_test_entry("http://127.0.0.1:9/never-used.pth")
    checkpoint = str(ParityCase(CASE).checkpoint)
    assert cli.main(["weights", "import", checkpoint, "--model", WEIGHTS_ID, "--tag", TAG]) == 0
    assert cache_files(cache) == CACHED
    assert cli.main(["weights", "verify", WEIGHTS_ID]) == 0
    out = capsys.readouterr().out
    assert f"{WEIGHTS_ID}/{TAG}: OK" in out

    # A corrupted cached file fails verification when its sha256 is recorded.
    from keras_pf.weights import cache, download, registry

    path = cache.cached_weights_path(WEIGHTS_ID, TAG)
    registry.WEIGHTS[WEIGHTS_ID]["tags"][TAG]["sha256"] = download.sha256_of(path)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    with open(path, "wb") as f:
        f.write(data)
    assert cli.main(["weights", "verify", WEIGHTS_ID, "--tag", TAG]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_named_constructors_load_imagenet_from_the_cache_by_weights_id(cache):
    """`PFResNet50Max()` / `PFViTSmall(...)` with the default weights="imagenet": a
    cached converted file is used (no network: the registry's source is Google Drive),
    whatever the model's name, head or input size."""
    import keras_pf
    from keras_pf.models.layers import resize_grid
    from keras_pf.weights import cache

    resnet = keras_pf.PFResNet50Max(weights=None)
    path = cache.weights_path("pf_resnet50_max", "imagenet")
    os.makedirs(os.path.dirname(path))
    resnet.save_weights(path)
    backbone = keras_pf.PFResNet50Max(include_top=False, pooling="avg", name="my_backbone")
    np.testing.assert_array_equal(np.asarray(backbone.get_layer("conv5_block3_3_conv").kernel),
                                  np.asarray(resnet.get_layer("conv5_block3_3_conv").kernel))

    vit = keras_pf.PFViTSmall(weights=None)
    vit.save_weights(cache.weights_path("pf_vit_small", "imagenet"))
    small = keras_pf.PFViTSmall(input_shape=(160, 160, 3))
    expected = resize_grid(np.asarray(vit.get_layer("pos_embed").embedding), (10, 10))
    np.testing.assert_allclose(np.asarray(small.get_layer("pos_embed").embedding), expected,
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(small.get_layer("predictions").kernel),
                                  np.asarray(vit.get_layer("predictions").kernel))


def test_corrupt_cached_file_without_a_record_says_how_to_recover(server, cache):
    register_test_entry(server.url + "/checkpoint.pth")
    load_by_tag()
    path = cache / f"{WEIGHTS_ID}_{TAG}.weights.h5"
    path.write_bytes(path.read_bytes()[:1000])
    os.remove(str(path) + ".sha256.json")  # as cached by an earlier version
    with pytest.raises(ValueError, match=f"keras-pf weights verify {WEIGHTS_ID}"):
        load_by_tag()
    assert cache_files(cache) == CACHED[:1]  # a file that does not load is not recorded


def _flip_64_bytes(path):
    """64 bytes in the middle of the file inverted (a bad disk, a broken copy): HDF5
    notices nothing, the model's outputs move."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    with open(path, "r+b") as f:  # in place: same inode, as a disk error would leave it
        f.write(data)


def test_flipped_bytes_in_a_cached_file_are_detected_and_it_is_got_again(server, cache, capsys):
    case = ParityCase(CASE)
    register_test_entry(server.url + "/checkpoint.pth")
    load_by_tag()
    path = cache / f"{WEIGHTS_ID}_{TAG}.weights.h5"
    _flip_64_bytes(path)
    model = load_by_tag()
    err = capsys.readouterr().err
    assert f"{path}: its sha256" in err and "getting it again" in err, err
    assert server.requests["/checkpoint.pth"] == 2  # converted again from the original
    np.testing.assert_allclose(np.asarray(model(case.input_nhwc)), case.logits, rtol=0, atol=1e-4)
    assert cache_files(cache) == CACHED
    # `keras-pf weights verify` checks the records too (no sha256 in the registry here)
    import keras_pf_cli as cli

    assert cli.main(["weights", "verify"]) == 0
    _flip_64_bytes(path)
    assert cli.main(["weights", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"{WEIGHTS_ID}/{TAG}: FAILED {path}: its sha256" in out, out


def test_a_users_weights_file_with_a_record_that_disagrees_is_an_error(cache, tmp_path, capsys):
    import keras_pf_cli as cli
    from keras_pf.weights import integrity

    path = tmp_path / "mine.weights.h5"
    build_case_model().save_weights(path)
    assert cli.main(["weights", "hash", str(path)]) == 0
    assert f"-> {path}.sha256.json" in capsys.readouterr().out
    build_case_model(weights=str(path))  # matches its record: loads
    assert cli.main(["weights", "verify", str(path)]) == 0
    _flip_64_bytes(path)
    with pytest.raises(integrity.IntegrityError) as error:
        build_case_model(weights=str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: its sha256") and "\n" not in message, message
    assert cli.main(["weights", "verify", str(path)]) == 1
    assert "FAILED" in capsys.readouterr().out
    # a truncated file is not recorded as good
    path.write_bytes(path.read_bytes()[:1000])
    os.remove(integrity.sidecar_path(path))
    assert cli.main(["weights", "hash", str(path)]) == 2
    assert "not a readable HDF5" in capsys.readouterr().err
    assert not os.path.exists(integrity.sidecar_path(path))


# --- faults: slow, endless, killed, locked, full disk ----------------------------------

def test_html_page_with_a_byte_order_mark_is_recognised_as_html(server, cache):
    server.mode = "html-bom"
    register_test_entry(server.url + "/checkpoint.pth")
    _assert_fails_cleanly(cache, "web page instead of the file")


def test_trickling_server_is_stopped_by_the_deadline(server, cache, monkeypatch):
    from keras_pf.weights import download

    monkeypatch.setenv(download.DEADLINE_ENV, "2")
    server.mode = "trickle"
    url = server.url + "/checkpoint.pth"
    register_test_entry(url)
    start = time.monotonic()
    message = _assert_fails_cleanly(cache, url, download.DEADLINE_ENV, "not complete after")
    assert time.monotonic() - start < 20, message


def test_silent_server_is_stopped_by_the_stall_timeout(server, cache, monkeypatch):
    from keras_pf.weights import download

    monkeypatch.setenv(download.STALL_TIMEOUT_ENV, "1")
    server.mode = "stall"
    url = server.url + "/checkpoint.pth"
    register_test_entry(url)
    _assert_fails_cleanly(cache, url, download.STALL_TIMEOUT_ENV, "no data for 1 s")


def test_endless_body_is_cut_at_the_size_cap(server, cache, monkeypatch):
    from keras_pf.weights import download

    monkeypatch.setenv(download.MAX_BYTES_ENV, str(1 << 20))
    server.mode = "endless"
    url = server.url + "/checkpoint.pth"
    register_test_entry(url)
    _assert_fails_cleanly(cache, url, download.MAX_BYTES_ENV, f"more than {1 << 20} bytes")


def test_endless_body_without_a_recorded_size_is_cut_at_a_cap_from_the_model(server, cache,
                                                                           monkeypatch):
    """No recorded size, no $KERAS_PF_DOWNLOAD_MAX_BYTES: the model being loaded bounds
    the checkpoint (8 float32 copies of its parameters + 16 MiB), not a flat 1.5 GiB."""
    from keras_pf.weights import download, download_bounds

    monkeypatch.delenv(download.MAX_BYTES_ENV, raising=False)
    server.mode = "endless"
    url = server.url + "/checkpoint.pth"
    register_test_entry(url)
    params = build_case_model().count_params()
    cap = download_bounds.BYTES_PER_PARAMETER * params + download_bounds.CAP_SLACK
    assert cap < 64 << 20  # a small model: far below the flat default
    _assert_fails_cleanly(cache, url, f"more than {cap} bytes",
                          f"8 float32 copies of the model's {params} parameters")


def test_a_trickle_below_the_minimum_rate_ends_after_the_grace_period(server, cache,
                                                                      monkeypatch):
    """A byte every 0.2 s never trips the stall timeout; below the minimum average rate
    after the grace period, the download ends, says so, and its lock is free again."""
    from filelock import FileLock

    from keras_pf.weights import cache as weights_cache
    from keras_pf.weights import download_bounds

    monkeypatch.setenv(download_bounds.MIN_RATE_ENV, "1000")
    monkeypatch.setenv(download_bounds.RATE_GRACE_ENV, "1")
    server.mode = "trickle"
    url = server.url + "/checkpoint.pth"
    register_test_entry(url)
    start = time.monotonic()
    message = _assert_fails_cleanly(cache, url, "below the minimum 1000 B/s",
                                    download_bounds.MIN_RATE_ENV, "lock released")
    assert time.monotonic() - start < 10, message
    lock = FileLock(weights_cache.weights_path(WEIGHTS_ID, TAG) + ".lock")
    lock.acquire(timeout=0)  # released: no other holder
    lock.release()
    # the same through the argument, for a direct download
    from keras_pf.weights import download
    from keras_pf.weights.download import WeightsDownloadError

    monkeypatch.delenv(download_bounds.MIN_RATE_ENV)
    with pytest.raises(WeightsDownloadError, match="below the minimum 500 B/s"):
        download.download_url(url, str(cache.parent / "direct.pth"), progress=False,
                              min_rate=500, rate_grace=0.5)
    assert not (cache.parent / "direct.pth").exists()


def test_mirror_file_larger_than_its_recorded_size_is_refused(server, cache, tmp_path, monkeypatch):
    import hashlib

    from keras_pf.weights import registry

    data = _converted_bytes(tmp_path)
    mirror = f"/mirror/{WEIGHTS_ID}_{TAG}.weights.h5"
    server.files[mirror] = data
    server.path_modes[mirror] = "endless"
    monkeypatch.setenv(registry.MIRROR_ENV, server.url + "/mirror")
    register_test_entry(server.url + "/checkpoint.pth", sha256=hashlib.sha256(data).hexdigest(),
                        size=len(data))
    load_by_tag()  # the original is got instead
    assert server.requests[mirror] == 1 and server.requests["/checkpoint.pth"] == 1
    assert cache_files(cache) == CACHED


def _fetch_script(url, gdrive_url=None, before=""):
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here, os.path.dirname(here), os.path.join(os.path.dirname(here), "helpers")]
    return textwrap.dedent(f"""
        import sys
        sys.path[:0] = {paths!r}
        {before}
        from test_weights_download import register_test_entry
        from keras_pf.weights import cache, download
        if {gdrive_url!r}:
            download.GDRIVE_URL = {gdrive_url!r}
        register_test_entry({url!r})
        try:
            print(cache.fetch({WEIGHTS_ID!r}, "imagenet", progress=False))
        except OSError as error:
            print("ERROR", error)
            sys.exit(1)
    """)


def _env(cache, **extra):
    """The child's environment: the test's cache, and a TMPDIR of its own beside it."""
    tmpdir = cache.parent.parent.parent / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, KERAS_HOME=str(cache.parent.parent), TF_CPP_MIN_LOG_LEVEL="3",
                TMPDIR=str(tmpdir), **extra)


def _wait_for(condition, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("source", ["url", "gdrive"])
def test_leftovers_of_a_killed_download_are_removed_by_the_next_run(server, cache, source):
    import signal

    server.files["/drive/abc"] = server.files["/checkpoint.pth"]
    url = server.url + "/checkpoint.pth" if source == "url" else "gdrive:abc"
    gdrive_url = server.url + "/drive/{id}"
    server.mode = "trickle"
    proc = subprocess.Popen([sys.executable, "-c", _fetch_script(url, gdrive_url)], env=_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from keras_pf import tempfiles

    unnamed = tempfiles.unnamed_in(tempfile.gettempdir()) is not None
    private = os.path.join(cache.parent.parent.parent, "tmp", f"keras_pf-{os.getuid()}")
    try:
        # mid-download: the server is sending; the temporary files exist (named ones in
        # the cache only where the filesystem has no unnamed files)
        assert _wait_for(lambda: server.requests["/checkpoint.pth"] + server.requests["/drive/abc"]
                         and (os.path.isdir(private) and os.listdir(private) if unnamed else
                              any(p.name.startswith((".tmp_", ".gdown-")) for p in cache.iterdir())))
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = cache_files(cache)
    if unnamed:
        assert left == [], left  # nothing in the cache: the download was unnamed
        assert os.listdir(private)  # its private folder, until the next run
        tempfiles.remove_dead(private)
        assert os.listdir(private) == []
    else:
        assert left and f"{WEIGHTS_ID}_{TAG}.weights.h5" not in left
    server.mode = "ok"
    from keras_pf.weights import download

    download.GDRIVE_URL, saved = gdrive_url, download.GDRIVE_URL
    try:
        register_test_entry(url)
        load_by_tag()
    finally:
        download.GDRIVE_URL = saved
    assert cache_files(cache) == CACHED


def test_leftovers_of_another_file_in_flight_are_not_touched(server, cache):
    from keras_pf.weights import cache as weights_cache

    register_test_entry(server.url + "/checkpoint.pth")
    cache.mkdir(parents=True)
    other = [cache / ".tmp_abcdefghother.weights.h5", cache / ".original-other.weights.h5-x1y2z3.pth"]
    for path in other:
        path.write_bytes(b"in flight")
    weights_cache.fetch(WEIGHTS_ID, "imagenet", progress=False)
    assert all(path.exists() for path in other)


def test_gdown_on_a_trickling_network_is_stopped_by_the_deadline(server, cache, monkeypatch):
    from keras_pf.weights import download

    server.files["/drive/abc"] = server.files["/checkpoint.pth"]
    server.mode = "trickle"
    monkeypatch.setenv(download.DEADLINE_ENV, "3")
    monkeypatch.setattr(download, "GDRIVE_URL", server.url + "/drive/{id}")
    register_test_entry("gdrive:abc")
    _assert_fails_cleanly(cache, "Google Drive file abc", download.DEADLINE_ENV)


def test_gdown_download_converts_and_caches(server, cache, monkeypatch):
    from keras_pf.weights import download

    server.files["/drive/abc"] = server.files["/checkpoint.pth"]
    monkeypatch.setattr(download, "GDRIVE_URL", server.url + "/drive/{id}")
    register_test_entry("gdrive:abc")
    load_by_tag()
    assert server.requests["/drive/abc"] >= 1
    assert cache_files(cache) == CACHED


def test_waiting_for_a_lock_held_by_another_process_says_so_and_gives_up(cache, monkeypatch, capsys):
    from keras_pf.weights import cache as weights_cache
    from keras_pf.weights import download

    register_test_entry("http://127.0.0.1:9/never-used.pth")
    path = weights_cache.weights_path(WEIGHTS_ID, TAG)
    os.makedirs(os.path.dirname(path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1]); "
         "l.acquire(); print('held', flush=True); time.sleep(120)", path + ".lock"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv(download.LOCK_TIMEOUT_ENV, "1")
        with pytest.raises(download.WeightsDownloadError) as error:
            weights_cache.fetch(WEIGHTS_ID, TAG, progress=False)
    finally:
        holder.kill()
        holder.wait()
    message = str(error.value)
    assert "gave up after 1 s" in message and path + ".lock" in message, message
    assert download.LOCK_TIMEOUT_ENV in message
    assert f"Waiting for another process to finish getting {path}" in capsys.readouterr().err


def test_full_disk_names_the_file(server, cache):
    """A file-size limit (EFBIG, as a full disk gives ENOSPC) while downloading."""
    before = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); " \
             "resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000))"
    url = server.url + "/checkpoint.pth"
    result = subprocess.run([sys.executable, "-c", _fetch_script(url, before=before)],
                            env=_env(cache), capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "File too large while writing " + str(cache) in result.stdout, result.stdout
    assert cache_files(cache) == []
