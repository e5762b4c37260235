"""The checkpoint reader: every layout in the parity folder, and hostile or broken files."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from keras_pf.weights.torch_reader import (CheckpointError, UnsafeCheckpointError,
                                           load_state_dict, read_checkpoint)

from conftest import PARITY_CASES
import torch_format


def test_layouts_in_the_wild():
    raw = load_state_dict(PARITY_CASES / "resnet_hybrid_64" / "checkpoint.pth")
    wrapped = read_checkpoint(PARITY_CASES / "resnet_hybrid_64_wrapped_module" / "checkpoint.pth")
    assert wrapped["arch"] == "resnet50_hybrid" and wrapped["epoch"] == 89
    assert wrapped["args"].model == "resnet50_hybrid"  # argparse.Namespace, rebuilt inertly
    unwrapped = load_state_dict(PARITY_CASES / "resnet_hybrid_64_wrapped_module" / "checkpoint.pth")
    assert list(unwrapped) == list(raw)  # `module.` prefixes stripped, order kept
    for key in raw:
        np.testing.assert_array_equal(unwrapped[key], raw[key])
    assert raw["conv1.1.num_batches_tracked"].dtype == np.int64
    half = load_state_dict(PARITY_CASES / "vit_max_64_wrapped_fp16" / "checkpoint.pth")
    full = load_state_dict(PARITY_CASES / "vit_max_64" / "checkpoint.pth")
    assert {v.dtype for v in half.values()} == {np.dtype("float16")}
    for key in full:
        np.testing.assert_allclose(half[key].astype(np.float32), full[key], rtol=1e-3, atol=1e-3)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_html_page_is_named_as_such(tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>")
    with pytest.raises(CheckpointError, match="HTML page"):
        read_checkpoint(path)


def test_truncated_file(tmp_path):
    data = (PARITY_CASES / "resnet_max_64" / "checkpoint.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_missing_storage(tmp_path):
    path = tmp_path / "partial.pth"
    torch_format.save({"a": np.ones((2, 3), np.float32)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist() if not n.endswith("data/0")}
    with zipfile.ZipFile(path, "w") as z:
        for name, content in entries.items():
            z.writestr(name, content)
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(path)


def test_non_contiguous_and_scalar_tensors_round_trip(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {"t": base.T, "scalar": np.array(5, np.int64), "half": base[:2].astype(np.float16)}
    path = torch_format.save(tensors, tmp_path / "t.pth")
    out = read_checkpoint(path)
    for key, value in tensors.items():
        assert out[key].shape == value.shape and out[key].dtype == value.dtype
        np.testing.assert_array_equal(out[key], value)
