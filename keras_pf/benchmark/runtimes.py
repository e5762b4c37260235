"""Runtimes side by side: every model in LiteRT (XNNPACK), ONNX Runtime and OpenVINO,
float32, and each runtime's quantized path where it has a well-kept one (ONNX Runtime's
`quantize_dynamic` and `quantize_static`), batch 1, as a ratio to keras' ResNet50 in the
same runtime (`keras-pf benchmark --runtimes`).

The files are those `keras_pf.export` writes (batch fixed at 1 here, like the LiteRT
file; no preprocessing inside). All of them are loaded in one fresh child process that
imports only numpy and the runtimes (not TensorFlow), each with `threads` threads, and
timed interleaved run by run, so that a load spike of the machine hits every runtime and
model alike. ONNX Runtime's worker threads are told not to spin between runs (they would
otherwise keep a core busy while the next runtime runs); OpenVINO is asked for float32
(`INFERENCE_PRECISION_HINT`), and also timed at its own default where that is bfloat16
(CPUs with AVX512_BF16/AMX), as `openvino-default`.
Weights are random (`weights=None`): latency does not depend on their values, and the
static int8 file is calibrated on random images (timing only).
"""

import json
import os
import subprocess
import sys

import numpy as np

from keras_pf import tempfiles
from keras_pf.files import write_atomic

# runtime variant -> (format of its file, what it is)
VARIANTS = {
    "litert": ("litert", "LiteRT, XNNPACK, float32"),
    "onnxruntime": ("onnx", "ONNX Runtime, float32"),
    "openvino": ("openvino", "OpenVINO CPU, float32"),
    "onnxruntime-dynamic": ("onnx", "ONNX Runtime, quantize_dynamic (int8 weights)"),
    "onnxruntime-int8": ("onnx", "ONNX Runtime, quantize_static (QDQ int8)"),
    "openvino-default": ("openvino", "OpenVINO CPU at its default precision"),
}
FLOAT = ("litert", "onnxruntime", "openvino")
DEFAULT_MODELS = ("ResNet50", "PFResNet50Max", "PFResNet50Hybrid", "PFViTSmall", "PFPiTSmall")
REFERENCE = "ResNet50"
# variant -> the modules it needs (a missing one skips the variant, with a note)
NEEDS = {"litert": ("ai_edge_litert",), "onnxruntime": ("tf2onnx", "onnx", "onnxruntime"),
         "openvino": ("openvino",)}


def _needs(variant):
    return NEEDS[variant.split("-")[0]]


def available(variants):
    """`(variants whose runtime is installed, {variant: why not})`."""
    import importlib.util

    ok, missing = [], {}
    for variant in variants:
        absent = [m for m in _needs(variant) if importlib.util.find_spec(m) is None]
        if absent:
            missing[variant] = f"not installed: {', '.join(absent)}"
        else:
            ok.append(variant)
    return ok, missing


# ------------------------------------------------------------------------------ files


class _Calibration:
    """onnxruntime's CalibrationDataReader over random images (timing only)."""

    def __init__(self, name, shape, count=4):
        rng = np.random.default_rng(0)
        self._batches = iter([{name: rng.normal(size=shape).astype("float32")}
                              for _ in range(count)])

    def get_next(self):
        return next(self._batches, None)


def export_files(model, directory, name, variants):
    """`{variant: path}`: `model`'s file for each runtime variant."""
    import logging

    from keras_pf.export import export_model

    # onnxruntime.quantization advises its pre-processing on the root logger, per call
    logging.getLogger().setLevel(logging.ERROR)

    paths, onnx_path = {}, os.path.join(directory, name + ".onnx")
    if "litert" in variants:
        paths["litert"] = export_model(model, os.path.join(directory, name + ".tflite"), "litert",
                                       metadata=False)
    if any(v.startswith("onnxruntime") for v in variants):
        export_model(model, onnx_path, "onnx", batch_size=1)
        paths["onnxruntime"] = onnx_path
    if "onnxruntime-dynamic" in variants:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = os.path.join(directory, name + "_dynamic.onnx")
        quantize_dynamic(onnx_path, path, weight_type=QuantType.QInt8)
        paths["onnxruntime-dynamic"] = path
    if "onnxruntime-int8" in variants:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        path = os.path.join(directory, name + "_int8.onnx")
        quantize_static(onnx_path, path, _Calibration("image", (1, *model.input_shape[1:])),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        paths["onnxruntime-int8"] = path
    if any(v.startswith("openvino") for v in variants):
        path = export_model(model, os.path.join(directory, name + ".xml"), "openvino", batch_size=1)
        for variant in ("openvino", "openvino-default"):
            if variant in variants:
                paths[variant] = path
    return {v: p for v, p in paths.items() if v in variants}


# ----------------------------------------------------------------------------- timing

# One child process: every (model, variant) session loaded, then timed in turn, run
# after run. Prints one JSON line: [[median, fastest], ...] in the order given, and the
# OpenVINO CPU plugin's default precision.
_CHILD = r"""
import json, sys, time
import numpy as np

threads, runs, warmup = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
jobs = json.loads(sys.argv[4])  # [[variant, path], ...]
rng = np.random.default_rng(0)
calls, ov_default = [], None

def litert(path):
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], rng.normal(size=inp["shape"]).astype(inp["dtype"]))
    return interp.invoke

def onnxruntime(path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    feed = {inp.name: rng.normal(size=[d if isinstance(d, int) else 1 for d in inp.shape]).astype("float32")}
    return lambda: sess.run(None, feed)

def openvino(path, precision):
    global ov_default
    import openvino as ov
    core = ov.Core()
    hint = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    ov_default = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(path, "CPU", config)
    request = compiled.create_infer_request()
    shape = [d.get_length() for d in compiled.inputs[0].get_partial_shape()]
    x = rng.normal(size=shape).astype("float32")
    return lambda: request.infer({0: x})

for variant, path in jobs:
    if variant == "litert":
        call = litert(path)
    elif variant.startswith("onnxruntime"):
        call = onnxruntime(path)
    else:
        call = openvino(path, None if variant == "openvino-default" else "f32")
    for _ in range(warmup):
        call()
    calls.append(call)
times = [[] for _ in calls]
for _ in range(runs):
    for call, series in zip(calls, times):
        start = time.perf_counter()
        call()
        series.append(time.perf_counter() - start)
print(json.dumps({"seconds": [[float(np.median(s)), float(np.min(s))] for s in times],
                  "openvino_default_precision": ov_default}))
"""


def time_files(jobs, threads=2, runs=20, warmup=3):
    """`([[median, fastest] seconds per job], openvino default precision)` for `jobs`
    `[(variant, path)]`, interleaved run by run in one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(threads), str(runs), str(warmup),
         json.dumps([[v, os.fspath(p)] for v, p in jobs])],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise ChildProcessError(f"Timing the runtimes failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["openvino_default_precision"]


# ---------------------------------------------------------------------------- benchmark


def benchmark_runtimes(models=DEFAULT_MODELS, variants=tuple(VARIANTS), image_size=224, runs=20,
                       warmup=3, threads=2, output_dir="benchmarks", builders=None,
                       reference=REFERENCE, log=print):
    """Time `models` in every installed runtime `variant` and write `runtimes.json` and
    `runtimes.md` to `output_dir`; return the report. `builders`: optional
    `{name: callable(image_size) -> model}` for models outside `keras_pf.benchmark.build`."""
    from keras_pf.benchmark import run as benchmark

    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"Need runs >= 1, warmup >= 0 and threads >= 1; received "
                         f"runs={runs}, warmup={warmup}, threads={threads}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown runtime {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    builders = builders or {}
    variants, skipped = available(variants)
    if not variants:
        raise ValueError("No runtime to time: " + "; ".join(f"{v} {why}" for v, why in skipped.items())
                         + ". pip install 'keras_pf[onnx,openvino]'")
    info = benchmark.machine()
    info.update(image_size=image_size, batch_size=1, runs=runs, warmup=warmup, threads=threads,
                weights="random (weights=None)", skipped=skipped, versions=_versions())
    results = {}
    with tempfiles.private_dir("runtimes-") as tmp:  # a kill leaves it to the next run
        files = {}
        for name in models:
            log(f"building and exporting {name} ({', '.join(variants)})")
            model = builders[name](image_size) if name in builders else benchmark.build(
                name, image_size, logits=True)
            files[name] = export_files(model, tmp, name, variants)
            results[name] = {"file_mb": {v: _size_mb(p) for v, p in files[name].items()}}
            del model
        jobs = [(name, v) for v in variants for name in models]
        log(f"timing {len(jobs)} files interleaved, {runs} runs, {threads} threads")
        seconds, ov_default = time_files([(v, files[n][v]) for n, v in jobs], threads, runs, warmup)
    info["openvino_default_precision"] = ov_default
    info["load_average_end"] = list(os.getloadavg())
    for (name, variant), (median, fastest) in zip(jobs, seconds):
        results[name].setdefault("seconds", {})[variant] = median
        results[name].setdefault("seconds_min", {})[variant] = fastest
    for name, row in results.items():
        ref = results.get(reference)
        row["ratio_to_" + reference] = {
            v: (s / ref["seconds"][v] if ref and ref["seconds"].get(v) else None)
            for v, s in row["seconds"].items()}
        floats = {v: s for v, s in row["seconds"].items() if v in FLOAT}
        row["fastest_float32"] = min(floats, key=floats.get) if floats else None
    report = {"machine": info, "reference": reference, "variants": variants, "models": results}
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "runtimes.json"), json.dumps(report, indent=2) + "\n")
    write_atomic(os.path.join(output_dir, "runtimes.md"), format_markdown(report))
    return report


def _size_mb(path):
    from keras_pf.export.common import size_bytes

    return size_bytes(path) / 2**20


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("ai-edge-litert", "onnxruntime", "openvino", "tf2onnx", "onnx"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


def format_markdown(report):
    """The latency table (ms, ratio to the reference in the same runtime; the fastest
    float32 runtime of each model in bold) and the file sizes."""
    variants, ref = report["variants"], report["reference"]
    info = report["machine"]
    head = "| model | " + " | ".join(variants) + " |"
    rule = "|---|" + "---|" * len(variants)
    lines = [f"Batch 1, {info['image_size']}x{info['image_size']}, {info['threads']} threads, "
             f"median of {info['runs']} interleaved runs, ms (ratio to {ref} in the same "
             "runtime); bold: the fastest float32 runtime of the model.", "", head, rule]
    for name, row in report["models"].items():
        cells = []
        for v in variants:
            s, r = row["seconds"].get(v), row["ratio_to_" + ref].get(v)
            text = "–" if s is None else f"{1e3 * s:.1f}" + (f" ({r:.2f}x)" if r is not None else "")
            cells.append(f"**{text}**" if v == row["fastest_float32"] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "File sizes (MB):", "", head, rule]
    for name, row in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{row['file_mb'][v]:.1f}" if v in row["file_mb"] else "–" for v in variants) + " |")
    lines += ["", f"CPU: {info['cpu']} ({info['cores']} cores; int8 flags: "
              f"{', '.join(info['int8_cpu_flags']) or 'none'}); OpenVINO's default precision "
              f"here: {info.get('openvino_default_precision')}; load average "
              f"{info['load_average_start'][0]:.1f} -> {info['load_average_end'][0]:.1f}; "
              + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + "."]
    if info["skipped"]:
        lines.append("Skipped: " + "; ".join(f"{v} ({why})" for v, why in info["skipped"].items()) + ".")
    return "\n".join(lines) + "\n"
