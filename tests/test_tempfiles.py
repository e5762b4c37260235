"""No trace after a kill (issue 22): outputs are written unnamed (Linux O_TMPFILE) and
linked into place when complete; named temporary folders live under one per-user
`$TMPDIR/keras_pf-<uid>` and a later run removes those of dead processes. Killed
writers are real child processes, SIGKILLed mid-write."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from keras_pf import files, tempfiles

PACKAGE = os.path.dirname(os.path.abspath(files.__file__))

# A writer that imports only keras_pf.files (not the package's __init__, which imports
# Keras), writes half a file through atomic_output and waits to be killed.
WRITER = f"""
import os, sys, time, types
package = types.ModuleType("keras_pf")
package.__path__ = [{PACKAGE!r}]
sys.modules["keras_pf"] = package
from keras_pf.files import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"half a file" * 100000)
    print("writing", flush=True)
    time.sleep(120)
"""

unnamed_supported = pytest.mark.skipif(
    tempfiles.unnamed_in(tempfile.gettempdir()) is None,
    reason="this filesystem has no O_TMPFILE: named temporaries, as documented")


def user_root(tmpdir):
    return os.path.join(tmpdir, f"keras_pf-{os.getuid()}")


def kill_mid_write(tmp_path, name):
    """Run WRITER for `tmp_path/out/name` with TMPDIR=`tmp_path/tmp`, SIGKILL it while
    it writes; returns (what the output folder held while it wrote, the TMPDIR)."""
    out = tmp_path / "out"
    out.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(out / name)],
                             env={**os.environ, "TMPDIR": str(tmpdir)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing", child.stderr.read()
        during = sorted(os.listdir(out))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return during, str(tmpdir)


@unnamed_supported
@pytest.mark.parametrize("name", ["model.tflite", "model.weights.h5"])
def test_a_killed_writer_leaves_nothing_beside_the_output(tmp_path, monkeypatch, capsys, name):
    import keras_pf_cli

    during, tmpdir = kill_mid_write(tmp_path, name)
    assert during == []  # not even while it wrote
    assert os.listdir(tmp_path / "out") == []
    # what it left in its private folder (the link to its unnamed file; HDF5's staged
    # file) goes with the next run of any command
    dead = os.listdir(user_root(tmpdir))
    assert len(dead) == 1 and dead[0].split("-")[2] == tempfiles._pid_space(), dead
    monkeypatch.setattr(tempfile, "tempdir", tmpdir)
    assert keras_pf_cli.main(["weights", "list"]) == 0
    assert os.listdir(user_root(tmpdir)) == []
    capsys.readouterr()


def test_the_next_command_removes_a_killed_process_private_folder(tmp_path, monkeypatch, capsys):
    """Any `keras-pf` run, here `weights list`, removes dead processes' folders and
    leaves live ones (its own, another live process's) alone."""
    import keras_pf_cli

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child_start = tempfiles._start_time(child.pid)
    space = tempfiles._pid_space()
    root = tempfiles.root()
    dead = os.path.join(root, f"{child.pid}-{child_start}-{space}-out-abc")
    reused = os.path.join(root, f"{os.getpid()}-1-{space}-out-def")  # this pid, another start
    elsewhere = os.path.join(root, "1-1-00000000-out-ghi")  # another machine's or container's
    for path in (dead, reused, elsewhere):
        os.makedirs(path)
    with tempfiles.private_dir("mine-") as mine:
        alive = os.path.join(root, f"{child.pid}-{child_start}-{space}-out-live")
        os.makedirs(alive)
        assert keras_pf_cli.main(["weights", "list"]) == 0
        assert os.path.isdir(alive) and os.path.isdir(mine) and os.path.isdir(dead)
        assert not os.path.exists(reused)  # the pid's start time tells it apart
        child.kill()
        child.wait()
        assert keras_pf_cli.main(["weights", "list"]) == 0
        assert not os.path.exists(alive) and not os.path.exists(dead)
        assert os.path.isdir(mine) and os.path.isdir(elsewhere)
    capsys.readouterr()


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640  # a plain file's mode under this umask
    os.umask(old)


def _atomic_replace_and_fail(tmp_path):
    """Replace out.bin through atomic_output, then fail a second write; returns out.bin."""
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with files.atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(RuntimeError):
        with files.atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    return path


@unnamed_supported
def test_an_unnamed_output_gets_the_mode_of_a_plain_file_and_replaces_the_old(tmp_path, umask_027):
    with files.atomic_output(tmp_path / "new.bin") as tmp:
        assert os.path.islink(tmp) and os.path.basename(tmp) == "new.bin"
        assert os.listdir(tmp_path) == []  # no name beside the output while it is written
        open(tmp, "wb").close()
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == umask_027
    os.remove(tmp_path / "new.bin")
    path = _atomic_replace_and_fail(tmp_path)
    assert path.stat().st_mode & 0o777 == umask_027


def test_without_unnamed_files_the_named_temporary_behaviour_stays(tmp_path, monkeypatch, umask_027):
    """No O_TMPFILE (simulated): today's `.tmp_*<name>` beside the output, renamed in."""
    monkeypatch.setattr(tempfiles, "unnamed_in", lambda directory: None)
    with files.atomic_output(tmp_path / "new.bin") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".tmp_")
        assert tmp.endswith("new.bin") and not os.path.islink(tmp)
        open(tmp, "wb").close()
    os.remove(tmp_path / "new.bin")
    path = _atomic_replace_and_fail(tmp_path)
    assert path.stat().st_mode & 0o777 == umask_027
    with tempfiles.scratch(str(tmp_path), ".original-x-", ".pth") as scratch:  # named, then gone
        assert os.path.basename(scratch).startswith(".original-x-") and not tempfiles.is_scratch(scratch)
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.fixture
def private_tmpdir(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    return str(tmpdir)


@pytest.mark.parametrize("planted", ["link", "file", "another user's"])
def test_a_per_user_folder_that_is_not_ours_is_refused(tmp_path, monkeypatch, private_tmpdir, planted):
    """A link (to a folder another user could read), a file or another user's folder in
    its place: refused by name, never followed; outputs fall back to named temporaries
    beside them and private folders to plain mkdtemp ones, with a warning."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "link":
        os.symlink(elsewhere, user_root(private_tmpdir))
    elif planted == "file":
        open(user_root(private_tmpdir), "w").close()
    else:  # this user's folder, seen by a process of uid + 1
        uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: uid + 1)
        os.mkdir(user_root(private_tmpdir), 0o700)
    with pytest.raises(OSError, match="is not a folder of yours"):
        tempfiles.root()
    assert not tempfiles.root_usable()
    files.write_atomic(tmp_path / "out.txt", "ok")
    assert (tmp_path / "out.txt").read_text() == "ok"
    with pytest.warns(RuntimeWarning, match="is not a folder of yours"):
        with tempfiles.private_dir("x-") as folder:
            assert os.path.dirname(folder) == private_tmpdir
            assert os.path.basename(folder).startswith("keras_pf_x-")
    assert os.listdir(elsewhere) == [] and sorted(os.listdir(private_tmpdir)) == [
        os.path.basename(user_root(private_tmpdir))]


def test_the_per_user_folder_is_made_private(private_tmpdir):
    os.mkdir(user_root(private_tmpdir), 0o755)
    os.chmod(user_root(private_tmpdir), 0o755)
    assert tempfiles.root() == user_root(private_tmpdir)
    assert os.stat(user_root(private_tmpdir)).st_mode & 0o777 == 0o700


@unnamed_supported
def test_a_scratch_file_is_unnamed_and_gone_after_use(tmp_path):
    with tempfiles.scratch(str(tmp_path), ".original-", ".pth") as path:
        assert tempfiles.is_scratch(path) and path.endswith(".pth")
        with files.atomic_output(path) as tmp:  # written in place: nothing to link
            assert tmp == path
            with open(tmp, "wb") as f:
                f.write(b"checkpoint")
        with open(path, "rb") as f:
            assert f.read() == b"checkpoint"
        assert os.listdir(tmp_path) == []
    assert os.listdir(tmp_path) == [] and not os.path.exists(path)


def test_start_times_tell_processes_apart():
    assert tempfiles._alive(f"{tempfiles._tag()}-x")
    space = tempfiles._pid_space()
    assert not tempfiles._alive(f"{os.getpid()}-0-{space}-x")  # a reused pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    time.sleep(0.1)
    assert not tempfiles._alive(f"{child.pid}-1-{space}-x")
    assert tempfiles._alive(f"{child.pid}-1-00000000-x")  # counted in other pids
    assert tempfiles._alive("not-ours")
