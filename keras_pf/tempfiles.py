"""Temporary files and folders that a killed process does not leave behind.

- Unnamed files (Linux `O_TMPFILE`): `unnamed_in(directory)` opens a file in
  `directory` that has no name at all; if the process dies, the kernel frees it.
  `link_into_place(fd, path)` names it once it is complete (`linkat` through
  `/proc/self/fd`; over an existing `path`, a link to a `.tmp_*` name renamed over it,
  the only instant a name exists). Where the filesystem or the system has no
  `O_TMPFILE` (NFS, some overlay filesystems, macOS), `unnamed_in` returns None and
  callers keep today's named temporaries (`keras_pf.files.atomic_output`).
- Writers that need a path (Keras, h5py, PIL, matplotlib) are given a symbolic link to
  `/proc/<pid>/fd/<n>`, named like the output (so its suffix is the output's), inside
  this process's private folder.
- Named folders (a SavedModel during an export, gdown's download folder, a reference
  weights file) live under one per-user folder, `$TMPDIR/keras_pf-<uid>/` (mode 0700,
  refused if it is not the user's own folder), each named
  `<pid>-<start time>-<pid space>-...`.
  `remove_dead()` removes those of processes that are gone (a reused pid is told apart
  by its start time); every `keras-pf` run calls it, and so does the first private
  folder a process makes.
"""

import contextlib
import errno
import getpass
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
import warnings

_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.EACCES,
                errno.EPERM, errno.ENOSYS}
_cleaned_for = None  # the pid that already removed dead processes' folders
_space = None  # (pid, `_pid_space()`) of this process
_scratch = {}  # path handed out by `scratch` -> the folder its unnamed file is in


def _uid():
    return os.getuid() if hasattr(os, "getuid") else getpass.getuser()


def root():
    """`$TMPDIR/keras_pf-<uid>`: made (0700) if missing; an error if it is not a real
    folder of this user (another user could have made it first, or put a link there).
    It is opened without following a link and checked through that open descriptor,
    so a link swapped in between is refused too, never followed."""
    path = os.path.join(tempfile.gettempdir(), f"keras_pf-{_uid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    refused = OSError(errno.EEXIST, f"{path} is not a folder of yours (a link, a file or "
                      "another user's); remove it, or set TMPDIR to a folder of your own")
    if not hasattr(os, "O_NOFOLLOW"):  # Windows: no links in the way, no owners to check
        if not os.path.isdir(path) or os.path.islink(path):
            raise refused
        return path
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise refused from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            raise refused
        if stat.S_IMODE(info.st_mode) != 0o700 and os.chmod in os.supports_fd:
            os.chmod(fd, 0o700)  # the folder itself, not what a name may point to
    finally:
        os.close(fd)
    if os.path.islink(path):  # replaced by a link since it was opened
        raise refused
    return path


def root_usable():
    """Whether `root()` can be used (else callers fall back to named temporaries)."""
    try:
        root()
    except OSError:
        return False
    return True


def _start_time(pid):
    """The start time of process `pid` (clock ticks since boot), or None if it is gone;
    "?" where /proc is not there (then only whether the pid exists is known; on Windows
    not even that, and nothing is ever taken for dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, IndexError):
        return None
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return "?"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def _pid_space():
    """Which pids a folder's name counts in: this boot of this kernel and this pid
    namespace (8 hex digits). A folder of another machine or container sharing
    `$TMPDIR` (NFS, a bind mount) has another, and is never taken for dead here."""
    global _space
    if _space and _space[0] == os.getpid():
        return _space[1]
    parts = []
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            with open(source) as f:
                parts.append(f.read().strip())
        except OSError:
            with contextlib.suppress(OSError):
                parts.append(str(os.stat(source).st_ino))
    if not parts:
        import socket

        parts.append(socket.gethostname())
    _space = (os.getpid(), hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8])
    return _space[1]


def _tag(pid=None):
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid) or '?'}-{_pid_space()}"


def _alive(name):
    """Whether the process that made the private folder `name`
    (`<pid>-<start time>-<pid space>-...`) may still run: False only for one of this pid
    space whose process is gone or whose pid now belongs to a later process."""
    pid, start, space = (name.split("-", 3) + ["", "", ""])[:3]
    if not pid.isdigit() or space != _pid_space():
        return True  # not one of ours, or counted in other pids: left alone
    now = _start_time(int(pid))
    return now is not None and (now == start or "?" in (now, start))


def remove_dead(directory=None):
    """Remove the private folders of processes that are gone (killed); returns them."""
    global _cleaned_for
    directory = directory or root()
    _cleaned_for = os.getpid()
    removed = []
    for name in os.listdir(directory):
        if not _alive(name):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def private_dir(prefix=""):
    """A folder of this process under `root()`, removed on every exit path; if the
    process is killed, the next run removes it (`remove_dead`). If `root()` is refused
    (another user's folder, a link), a warning says so and the folder is a plain
    `tempfile.mkdtemp` one (0700, random name) in `$TMPDIR`, as before: a kill leaves it."""
    try:
        base = root()
    except OSError as error:
        warnings.warn(f"{error}; until then a killed keras_pf process may leave a "
                      f"keras_pf_* folder in {tempfile.gettempdir()}", RuntimeWarning, stacklevel=3)
        base = None
    if base and _cleaned_for != os.getpid():
        remove_dead(base)
    path = (tempfile.mkdtemp(dir=base, prefix=f"{_tag()}-{prefix}") if base
            else tempfile.mkdtemp(prefix=f"keras_pf_{prefix}"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unnamed_in(directory):
    """A file descriptor (read-write) of a new unnamed file in `directory`, or None
    where the filesystem cannot make one. Its mode is 0666 less the umask, as a plain
    file's."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            return None
        raise


def _linkat(source, target):
    """linkat(source, target, AT_SYMLINK_FOLLOW). (`os.link` calls plain link(2), which
    does not follow the /proc link, unless a dir_fd is given: then it calls linkat; the
    paths being absolute, the folder itself does not matter.)"""
    folder = os.open("/", os.O_RDONLY)
    try:
        os.link(source, target, src_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def link_into_place(fd, path):
    """Give the unnamed file `fd` the name `path` (replacing a file there), atomically."""
    source = f"/proc/self/fd/{fd}"
    path = os.path.abspath(path)
    try:
        _linkat(source, path)
        return
    except FileExistsError:
        pass
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".tmp_{secrets.token_hex(4)}{base}")
    _linkat(source, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def path_to(fd, name, adopt=True):
    """A path naming the unnamed file `fd` (a link `name` in a private folder) for
    writers that want a path; what they write goes into `fd`. If a writer replaced the
    link by a file of its own, its content is copied into `fd` on exit (`adopt`)."""
    with private_dir("out-") as directory:
        link = os.path.join(directory, name)
        os.symlink(f"/proc/{os.getpid()}/fd/{fd}", link)
        yield link
        if adopt and not os.path.islink(link) and os.path.isfile(link):
            with open(link, "rb") as src, open(f"/proc/self/fd/{fd}", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def copy_into(path, fd):
    """Copy the file at `path` into the unnamed file `fd` (from its start)."""
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    with open(path, "rb") as src:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]


@contextlib.contextmanager
def scratch(directory, prefix, suffix):
    """A path for a file that is used and thrown away (a downloaded original before its
    conversion), in `directory`'s filesystem: an unnamed file where possible (nothing to
    leave behind), else a named `prefix*suffix` file in `directory` (removed on exit,
    and by the cache's clean-up after a kill)."""
    fd = unnamed_in(directory) if root_usable() else None
    if fd is None:
        handle, path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
        os.close(handle)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        return
    try:
        with path_to(fd, "scratch" + suffix, adopt=False) as path:
            _scratch[path] = directory
            try:
                yield path
            finally:
                _scratch.pop(path, None)
    finally:
        os.close(fd)


def is_scratch(path):
    """The folder of `path`'s unnamed file if `path` came from `scratch` (write into it
    directly), else None."""
    return _scratch.get(os.fspath(path))
