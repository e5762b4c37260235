"""Writing output files so that a failure never leaves a partial or corrupt file."""

import contextlib
import errno
import os
import tempfile

# A full disk (or a file-size limit): the OS's message names no file.
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside `path` to write to; on success it becomes `path`
    (one rename), on any failure it is removed. The temporary name ends with `path`'s
    own name, so Keras, matplotlib and PIL see the same extension."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=base)
    os.close(fd)
    try:
        try:
            yield tmp
        except OSError as error:
            if error.errno in DISK_FULL and path not in str(error):
                raise OSError(error.errno, f"{os.strerror(error.errno)} while writing {path}; "
                              f"free space in {directory} or write elsewhere") from error
            raise
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a plain file is wanted
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path, content):
    """Write `content` (bytes or str) to `path` atomically; returns `path`."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    return path
