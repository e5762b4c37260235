"""`keras-pf weights hash FILE...` and `keras-pf weights verify FILE`: integrity records
of a user's own weights and model files (see `keras_pf.weights.integrity`)."""

import os

from keras_pf.weights import integrity

HASHABLE = (".weights.h5", ".keras", ".h5")


def run_hash(files):
    """Record each file (a readable weights or model file) beside it; 0, else 2 on the
    first that cannot be recorded."""
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        if not path.endswith(HASHABLE):
            raise ValueError(f"{path}: expected a weights or model file ({', '.join(HASHABLE)})")
        from keras_pf.safe_load import weights_layout

        weights_layout(path)  # a truncated or corrupt file is not recorded as good
        entry = integrity.record(path)
        print(f"{path}: sha256={entry['sha256']} size={entry['size']} -> "
              f"{integrity.sidecar_path(path)}")
    return 0


def run_verify_file(path):
    """Check `path` against its integrity record: 0 if it matches, 1 if it differs."""
    if integrity.read_sidecar(path) is None:
        raise ValueError(f"{path} has no integrity record ({integrity.sidecar_path(path)}); "
                         f"write one with `keras-pf weights hash {path}`")
    why = integrity.problem(path)
    if why:
        print(f"{path}: FAILED {why}")
        return 1
    print(f"{path}: OK sha256={integrity.sha256_of(path)} (matches its integrity record)")
    return 0
