"""Writing output files so that a failure never leaves a partial or corrupt file."""

import contextlib
import os
import tempfile


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
        yield tmp
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
