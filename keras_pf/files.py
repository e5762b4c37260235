"""Writing output files so that a failure never leaves a partial or corrupt file."""

import contextlib
import errno
import os
import secrets
import shutil
import tempfile

# A full disk (or a file-size limit): the OS's message names no file.
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# Files written by HDF5 (h5py, Keras' .weights.h5), which needs a real path to write to.
HDF5_SUFFIXES = (".h5", ".hdf5")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path to write to; on success it becomes `path`, on any failure
    nothing is left. The temporary name ends with `path`'s own name, so Keras,
    matplotlib and PIL see the same extension.

    Where the filesystem allows it (Linux `O_TMPFILE`, see `keras_pf.tempfiles`) the
    file being written has no name beside `path` at all: a killed process leaves
    nothing there. (An HDF5 file is written in this process's private folder under
    `$TMPDIR/keras_pf-<uid>/`, removed by the next run after a kill, then copied into
    the unnamed file.) Elsewhere it is a `.tmp_*<name>` file beside `path`, renamed
    into place (a kill leaves it, and the next run of the same command removes it)."""
    from keras_pf import tempfiles

    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if tempfiles.is_scratch(path):  # an unnamed scratch file: written in place, thrown away
        home = tempfiles.is_scratch(path)
        try:
            yield path
        except OSError as error:
            _name_full_disk(error, f"{home} (an unnamed temporary file there)", home)
            raise
        return
    unnamed = tempfiles.unnamed_in(directory) if tempfiles.root_usable() else None
    if unnamed is not None:
        try:
            # HDF5 resolves a path's links to the real file, which an unnamed file has not:
            # it writes a named file in the private folder, copied in when complete.
            staged = path.endswith(HDF5_SUFFIXES)
            with (tempfiles.private_dir("out-") if staged
                  else tempfiles.path_to(unnamed, base)) as tmp:
                tmp = os.path.join(tmp, base) if staged else tmp
                try:
                    yield tmp
                except OSError as error:  # staged: the full disk is $TMPDIR's
                    _name_full_disk(error, f"{path} (staged as {tmp})" if staged else path,
                                    os.path.dirname(tmp) if staged else directory)
                    raise
                try:
                    if staged:
                        tempfiles.copy_into(tmp, unnamed)
                except OSError as error:
                    _name_full_disk(error, path, directory)
                    raise
            tempfiles.link_into_place(unnamed, path)
        finally:
            os.close(unnamed)
        return
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=base)
    os.close(fd)
    try:
        try:
            yield tmp
        except OSError as error:
            _name_full_disk(error, path, directory)
            raise
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a plain file is wanted
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _name_full_disk(error, path, directory):
    """Raise a full disk's error again, naming the file (the OS's message does not)."""
    if error.errno in DISK_FULL and path not in str(error):
        raise OSError(error.errno, f"{os.strerror(error.errno)} while writing {path}; "
                      f"free space in {directory} or write elsewhere") from error


def write_atomic(path, content):
    """Write `content` (bytes or str) to `path` atomically; returns `path`."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    return path


@contextlib.contextmanager
def atomic_folder(path):
    """Yield an empty temporary folder; on success it becomes `path` (a previous folder
    there is replaced), on any failure it is removed. It is built in this process's
    private folder (`keras_pf.tempfiles`: a kill leaves it there, removed by the next
    run) and moved beside `path` only when complete (renamed where the filesystem is the
    same, else copied), then renamed into place."""
    from keras_pf import tempfiles

    path = os.path.abspath(os.fspath(path).rstrip("/" + os.sep))
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    with tempfiles.private_dir("folder-") as private:
        tmp = os.path.join(private, base)
        os.mkdir(tmp)
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # as a plain folder, not the private one's 0700
        staged = os.path.join(directory, f".tmp_{secrets.token_hex(4)}{base}")
        try:
            try:
                os.rename(tmp, staged)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                shutil.copytree(tmp, staged)
            if os.path.exists(path):
                old = tempfile.mkdtemp(dir=directory, prefix=".tmp_old_", suffix=base)
                os.rename(path, os.path.join(old, base))
                os.rename(staged, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(staged, path)
        finally:
            if os.path.exists(staged):
                shutil.rmtree(staged, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
