"""Smoke test of the runtime benchmark (`keras_pf/benchmark/runtimes.py`) at a tiny
size: every runtime's file is timed, ratios are to the reference in the same runtime."""

import json

import pytest

from keras_pf.benchmark import runtimes

from conftest import tiny_resnet


def _tiny(block):
    return lambda size: tiny_resnet(block, size, classifier_activation=None)


@pytest.mark.slow
def test_every_runtime_is_timed_with_ratios_to_the_reference(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("tf2onnx")
    builders = {"ref": _tiny("plain"), "max": _tiny("max")}
    report = runtimes.benchmark_runtimes(list(builders), image_size=32, runs=2, warmup=1,
                                         output_dir=str(tmp_path), builders=builders,
                                         reference="ref", log=lambda *_: None)
    assert report["variants"] == list(runtimes.VARIANTS)
    for name, row in report["models"].items():
        assert set(row["seconds"]) == set(runtimes.VARIANTS) and all(s > 0 for s in row["seconds"].values())
        ratios = row["ratio_to_ref"]
        for variant, seconds in row["seconds"].items():
            assert ratios[variant] == pytest.approx(seconds / report["models"]["ref"]["seconds"][variant])
        assert row["fastest_float32"] == min(runtimes.FLOAT, key=row["seconds"].get)
        # quantized ONNX files are smaller than the float one
        assert row["file_mb"]["onnxruntime-dynamic"] < row["file_mb"]["onnxruntime"]
    assert report["models"]["ref"]["ratio_to_ref"]["litert"] == 1.0
    assert json.load(open(tmp_path / "runtimes.json"))["reference"] == "ref"
    table = open(tmp_path / "runtimes.md").read()
    assert "| max |" in table and "**" in table and "File sizes (MB)" in table


def test_unknown_runtime_and_missing_runtime(monkeypatch):
    with pytest.raises(ValueError, match="Unknown runtime 'tensorrt'"):
        runtimes.benchmark_runtimes(["ResNet50"], ["tensorrt"])
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"pip install 'keras_pf\[onnx,openvino\]'"):
        runtimes.benchmark_runtimes(["ResNet50"], ["onnxruntime", "openvino"])
