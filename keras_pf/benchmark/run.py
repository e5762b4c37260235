"""Side-by-side benchmark of the parameter-free networks against `keras.applications`
ResNet50 and MobileNetV2: parameters, FLOPs, Keras latency (compiled, XLA), TFLite
latency, file size and peak memory per precision, each as a ratio to ResNet50.

One process, one run; the timings interleave the models run by run, so that a load
spike of the machine hits all of them alike: Keras in this process, TFLite in one fresh
child process that imports only the LiteRT interpreter and times every file (all models,
all precisions) in turn. Each file's peak
memory is measured in a child process of its own.
Weights are random (`weights=None`): latency does not depend on their values, and int8
files are calibrated on random images, which is fine for timing but not for accuracy.

TensorFlow-specific (TFLite export and LiteRT), hence its own package; `keras-pf
benchmark` and `tools/benchmark.py` run `benchmark_models`.
"""

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from keras_pf.benchmark import litert_child
from keras_pf.files import atomic_output, write_atomic
from keras_pf.mobile.export import PRECISIONS
from keras_pf.models.layers import builtin_class
from keras_pf.models.resolve import BASELINES  # keras.applications constructors

DEFAULT_MODELS = ("ResNet50", "MobileNetV2", "PFResNet50Max", "PFResNet50Hybrid",
                  "PFViTSmall", "PFPiTSmall")
# compiled: Keras' compiled predict step; folded: the same after `fold_batchnorm`
# (BatchNorm folded into the convolutions, as the TFLite converter does); xla: compiled
# with XLA.
KERAS_MODES = ("compiled", "folded", "xla")
REFERENCE = "ResNet50"

# Reported ImageNet top-1 of the baselines (keras.applications docs; the paper's own
# R50 baseline is 76.2, but this is keras' ResNet50, so its own figure is used). The
# parameter-free models' figures come from the weights registry.
BASELINE_TOP1 = {"ResNet50": {"keras.applications": 74.9},
                 "MobileNetV2": {"keras.applications": 71.3}}


# ------------------------------------------------------------------------------ models


def build(name, image_size=224, classes=1000, logits=False):
    """A `weights=None` model `name` (a keras.applications baseline or a
    `keras_pf.MODELS` name) for `image_size` x `image_size` RGB input, with a
    `classes`-way head (softmax, or none with `logits`)."""
    from keras_pf.models import resolve

    return resolve.build(name, generic=False, baselines=True, weights=None,
                         input_shape=(image_size, image_size, 3), classes=classes,
                         classifier_activation=None if logits else "softmax")


def reported_top1(name):
    """`{recipe or tag: top-1}` reported for `name` ({} if none is known)."""
    if name in BASELINE_TOP1:
        return dict(BASELINE_TOP1[name])
    from keras_pf.weights import registry

    figures = {}
    for entry in registry.WEIGHTS.values():
        if entry.get("model") != name:
            continue
        for tag, info in entry.get("tags", {}).items():
            reported = info.get("reported") or {}
            if reported.get("top1") is not None:
                figures[tag] = reported["top1"]
            figures.update(reported.get("top1_by_recipe") or {})
    return figures


# ---------------------------------------------------------------------------- machine

# The instruction-set features that decide whether int8 is faster than float32: x86
# without a dot-product instruction (AVX2 only) multiplies int8 little faster than
# float32; AVX-512 VNNI / AVX-VNNI, and ARM's dot product (ARMv8.2+, most phones since
# 2018: "asimddp"), do 4 int8 multiply-adds per lane.
INT8_CPU_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                            "asimddp", "i8mm"})


def machine():
    """What the numbers were measured on."""
    import keras

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags = sorted(set(line.split(":", 1)[1].split()) & INT8_CPU_FLAGS)
                if cpu and flags:
                    break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    def installed(distribution):  # without importing it (TensorFlow takes seconds)
        try:
            return version(distribution)
        except PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "int8_cpu_flags": flags,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": installed("tensorflow"),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "jax": installed("jax"),
        "torch": installed("torch"),
        "ai_edge_litert": installed("ai-edge-litert"),
        "load_average_start": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------ keras


def keras_latencies(models, modes=KERAS_MODES, runs=20, warmup=3):
    """`{name: {mode: median seconds}}` and `{name: {mode: fastest run's seconds}}`,
    batch 1, the models interleaved run by run."""
    from keras_pf.benchmark import profile
    from keras_pf.models.inference import fold_batchnorm

    results, fastest = {name: {} for name in models}, {name: {} for name in models}
    for mode in modes:
        calls = {}
        for name, model in models.items():
            if mode == "folded":
                model = fold_batchnorm(model)
            predict = profile.compiled_predict(model, jit_compile=mode == "xla")
            x = profile.random_batch(model)
            calls[name] = (lambda p, x: lambda: p(x))(predict, x)
            for _ in range(warmup):
                calls[name]()
        times = {name: [] for name in models}
        for _ in range(runs):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        for name in models:
            results[name][mode] = float(np.median(times[name]))
            fastest[name][mode] = float(np.min(times[name]))
    return results, fastest


# ----------------------------------------------------------------------------- tflite

def _child(mode, paths, threads, runs=1, warmup=1):
    """Run `litert_child.py` (by its path, not `python -m`: `-m` would import the
    keras_pf package first, hence TensorFlow, and the child must hold only LiteRT)."""
    done = subprocess.run(
        [sys.executable, litert_child.__file__, mode, str(threads), str(runs), str(warmup),
         *map(os.fspath, paths)],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        # An OSError, so keras-pf reports it as a message rather than a traceback.
        raise ChildProcessError(f"Running {', '.join(map(str, paths))} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tflite_latencies(paths, threads=2, runs=20, warmup=3):
    """`[median, fastest]` `invoke()` seconds of each `.tflite` file, batch 1, with the
    interpreter's default (XNNPACK) delegate; the files interleaved run by run in one
    fresh process."""
    return _child("latency", paths, threads, runs, warmup)


def tflite_peak_memory(path, threads=2):
    """MB: peak RSS increase of a fresh process over loading, allocating and running
    the file (Linux; None elsewhere)."""
    return _child("memory", [path], threads)


def export_all(model, directory, name, precisions=PRECISIONS, calibration_images=8):
    """`{precision: path}`: the model exported with `keras_pf.mobile.export.export_tflite`.
    Int8 is calibrated on random images (timing only)."""
    from keras_pf.mobile.export import export_tflite

    paths = {}
    for precision in precisions:
        path = os.path.join(directory, f"{name}_{precision}.tflite")
        calibration = None
        if precision == "int8":
            size = tuple(model.input_shape[1:])
            calibration = np.random.default_rng(0).normal(0, 1, (calibration_images, *size))
        export_tflite(model, path, precision=precision, calibration=calibration)
        paths[precision] = path
    return paths


# ---------------------------------------------------------------------- int8 fidelity

# How close each precision's file stays to the Keras model is only meaningful for a model
# whose predictions mean something; ImageNet weights cannot be downloaded everywhere the
# benchmark runs, so each architecture is trained briefly on a task it can learn from
# generated images, then exported, and its files compared with it on held-out images.
FIDELITY_CLASSES = 12


def grating_images(count, size, classes=FIDELITY_CLASSES, seed=0):
    """`(pixels, labels)`: float32 RGB pixels in [0, 255] and int labels of a task that
    needs spatial features: class c is a sinusoidal grating at c * 180 / classes degrees
    (jittered), with random frequency, phase and colours, plus pixel noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    # neighbouring classes nearly touch, so that some test images sit near a decision
    # boundary, where a quantized file can disagree with its float model
    angle = (labels + rng.uniform(-0.4, 0.4, count)) * np.pi / classes
    cycles = rng.uniform(2.5, 6.0, count)
    phase = rng.uniform(0, 2 * np.pi, count)
    yy, xx = np.mgrid[0:size, 0:size].astype("float32") / size
    wave = np.sin(2 * np.pi * cycles[:, None, None]
                  * (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
                  + phase[:, None, None])
    dark = rng.uniform(0, 110, (count, 1, 1, 3))
    bright = rng.uniform(145, 255, (count, 1, 1, 3))
    mix = (wave[..., None] + 1) / 2
    pixels = dark + (bright - dark) * mix + rng.normal(0, 25, (count, size, size, 1))
    return np.clip(pixels, 0, 255).astype("float32"), labels


def int8_fidelity(model, directory, name="model", epochs=3, train_images=2048,
                  test_images=512, calibration_images=64, precisions=PRECISIONS,
                  batch_size=32, learning_rate=5e-4, seed=0):
    """Train `model` (a fresh classifier) on `grating_images`, export it at every
    precision (int8 calibrated on `calibration_images` training images) and compare each
    file with the Keras model on `test_images` other images. Returns
    `{"keras_top1", "train_top1", "epochs", "images", precision: {"top1",
    "top1_agreement", "mean_abs_error", "max_abs_error", "relative_error"}}`; errors
    are on the model's outputs (logits for a model without softmax), `relative_error`
    is the mean absolute error over the mean absolute output."""
    import keras

    from keras_pf.mobile.check import run_tflite
    from keras_pf.mobile.export import export_tflite, outputs_probabilities

    size = tuple(model.input_shape[1:3])
    classes = model.output_shape[-1]
    train, train_labels = grating_images(train_images, size[0], classes, seed)
    test, test_labels = grating_images(test_images, size[0], classes, seed + 1)

    def normalize(pixels):  # the same for every architecture: the input is a tensor
        return pixels / 127.5 - 1.0

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=not outputs_probabilities(model)),
                  metrics=["accuracy"])
    history = model.fit(normalize(train), train_labels, batch_size=batch_size, epochs=epochs,
                        verbose=0)
    reference = np.asarray(model.predict(normalize(test), batch_size=64, verbose=0), "float32")
    scale = float(np.mean(np.abs(reference))) or 1.0
    result = {"epochs": epochs, "images": {"train": train_images, "test": test_images,
                                           "calibration": calibration_images},
              "train_top1": float(history.history["accuracy"][-1]),
              "keras_top1": float(np.mean(reference.argmax(-1) == test_labels))}
    for precision in precisions:
        path = os.path.join(directory, f"{name}_fidelity_{precision}.tflite")
        calibration = normalize(train[:calibration_images]) if precision == "int8" else None
        export_tflite(model, path, precision, calibration=calibration, metadata=False,
                      labels=[str(i) for i in range(classes)])
        outputs = run_tflite(path, normalize(test))
        error = np.abs(outputs - reference)
        result[precision] = {
            "top1": float(np.mean(outputs.argmax(-1) == test_labels)),
            "top1_agreement": float(np.mean(outputs.argmax(-1) == reference.argmax(-1))),
            "mean_abs_error": float(error.mean()), "max_abs_error": float(error.max()),
            "relative_error": float(error.mean()) / scale}
    return result


# ------------------------------------------------------------------------- op profile

# Where the float32 time goes. The Python LiteRT interpreter has no per-op profiler, so
# every layer that becomes an op of its own is exported alone (same input shape, batch 1,
# same weights) and timed. Layers the exported graph does not run as ops of their own are
# skipped: BatchNorm after a conv (the converter folds it in), ReLU after a conv, BatchNorm
# or add (fused as the op's activation), and a zero pad before a conv (XNNPACK fuses it).
_CONVS = ("Conv2D", "DepthwiseConv2D")


def _runs_as_own_op(layer):
    from keras_pf._compat.keras import inbound_nodes, outbound_nodes, producer

    kind = builtin_class(layer).__name__
    if kind == "InputLayer" or not inbound_nodes(layer):
        return False
    before = builtin_class(producer(layer)).__name__
    if kind == "BatchNormalization":
        return before not in _CONVS
    relu = kind == "ReLU" or (kind == "Activation" and layer.get_config()["activation"] == "relu")
    if relu:
        return before not in (*_CONVS, "BatchNormalization", "Add")
    if kind == "ZeroPadding2D":
        return not all(builtin_class(node.operation).__name__ in _CONVS for node in outbound_nodes(layer))
    return True


def layer_kind(layer):
    """How the op profile groups a layer: convolutions by kernel size and stride
    ("Conv2D 1x1", "Conv2D 1x1/2"), everything else by class (keras_pf's
    FastMaxPooling2D and FastGroupedConv2D as the MaxPooling2D and Conv2D they export as)."""
    kind = builtin_class(layer).__name__
    if kind in _CONVS:
        (kh, kw), stride = layer.kernel_size, max(layer.strides)
        kind += f" {kh}x{kw}" + (f"/{stride}" if stride > 1 else "")
    return kind


def export_layers(model, directory):
    """`[(layer, path)]`: every layer of functional `model` that runs as an op of its own
    in the exported graph, written alone as a float32 `.tflite` file (batch 1)."""
    import keras
    import tensorflow as tf

    from keras_pf._compat.keras import input_tensors
    from keras_pf._compat.tensorflow import freeze_concrete_function

    os.makedirs(directory, exist_ok=True)
    files = []
    for index, layer in enumerate(model.layers):
        if not _runs_as_own_op(layer):
            continue
        # One input per distinct tensor (attention is called with query = value)
        inputs = input_tensors(layer)
        alone = keras.Model(inputs if len(inputs) > 1 else inputs[0], layer.output)
        specs = [tf.TensorSpec((1, *t.shape[1:]), t.dtype) for t in inputs]
        run = tf.function(lambda *x, m=alone: m(list(x) if len(x) > 1 else x[0], training=False))
        # Weights as constants, as in a full export (not resource variables)
        frozen = freeze_concrete_function(run.get_concrete_function(*specs))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], alone)
        converter.experimental_lower_to_saved_model = False  # as keras_pf.mobile.converter
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        path = os.path.join(directory, f"{index:04d}.tflite")
        write_atomic(path, converter.convert())
        files.append((layer, path))
    return files


def op_profile(files, threads=2, runs=20, warmup=3):
    """Time the single-layer files of `export_layers` (one fresh process, each file's
    runs in a row). Returns `{"seconds": sum, "layers": [...], "by_kind": {kind: {"count",
    "seconds", "macs"}}}`, kinds in decreasing time."""
    from keras_pf.benchmark import profile
    seconds = _child("consecutive", [path for _, path in files], threads, runs, warmup)
    layers, by_kind = [], {}
    for (layer, _), (median, _) in zip(files, seconds):
        kind = layer_kind(layer)
        macs = profile.layer_macs(layer)
        layers.append({"layer": layer.name, "kind": kind, "macs": macs, "seconds": median})
        group = by_kind.setdefault(kind, {"count": 0, "seconds": 0.0, "macs": 0})
        group["count"] += 1
        group["seconds"] += median
        group["macs"] += macs
    by_kind = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]["seconds"]))
    return {"seconds": sum(row["seconds"] for row in layers), "layers": layers,
            "by_kind": by_kind}


# ------------------------------------------------------------------------------- run


def _ratios(results, reference):
    """Each model's figures divided by the reference model's same figure."""
    if reference not in results:
        return
    ref = results[reference]

    def ratio(a, b):
        return None if a is None or not b else a / b

    for row in results.values():
        row["ratio_to_" + reference] = {
            "params": ratio(row["params"], ref["params"]),
            "flops": ratio(row["flops"], ref["flops"]),
            "keras": {m: ratio(row["keras"].get(m), ref["keras"].get(m)) for m in row["keras"]},
            "keras_min": {m: ratio(row["keras_min"].get(m), ref["keras_min"].get(m))
                          for m in row["keras_min"]},
            "tflite": {p: {k: ratio(row["tflite"][p].get(k), ref["tflite"].get(p, {}).get(k))
                           for k in ("seconds", "seconds_min", "file_mb", "peak_memory_mb")}
                       for p in row["tflite"]},
        }


def benchmark_models(models=DEFAULT_MODELS, image_size=224, runs=20, warmup=3, threads=2,
                     precisions=PRECISIONS, keras_modes=KERAS_MODES, output_dir="benchmarks",
                     builders=None, reference=REFERENCE, log=print, op_profile_models=(),
                     fidelity_models=(), fidelity_size=64, fidelity_epochs=3):
    """Measure `models` side by side and write `results.json`, `results.md` and
    `top1_vs_latency.png` to `output_dir`. Returns the results dict.

    `builders`: optional `{name: callable(image_size) -> model}` for models outside
    `build` (e.g. small test configurations). `reference`: the model every figure
    is divided by (pair by pair: same figure, same precision or mode).
    Keras runs with TensorFlow's default thread pools; TFLite with `threads`.
    `op_profile_models`: models whose float32 time is also broken down by op (see
    `op_profile`). `fidelity_models`: models also trained for `fidelity_epochs` at
    `fidelity_size` px on generated images and their files compared with them on
    held-out images (see `int8_fidelity`; `builders` are called with `fidelity_size`).
    """
    from keras_pf.benchmark import profile
    from keras_pf.models import resolve

    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"Need runs >= 1, warmup >= 0 and threads >= 1; received "
                         f"runs={runs}, warmup={warmup}, threads={threads}")
    builders = builders or {}
    for name in models:  # before minutes of building and exporting
        if name not in builders:
            resolve.check_name(name, baselines=True)
    for option, chosen in (("--op-profile", op_profile_models), ("--int8-fidelity", fidelity_models)):
        stray = [n for n in chosen if n not in models]
        if stray:
            raise ValueError(f"{option} model {stray[0]!r} is not among the benchmarked "
                             f"models ({', '.join(models)})")
    info = machine()
    info.update(image_size=image_size, batch_size=1, runs=runs, warmup=warmup,
                tflite_threads=threads, weights="random (weights=None)",
                int8_calibration="random images (timing only)")
    if fidelity_models:
        info.update(fidelity_size=fidelity_size, fidelity_epochs=fidelity_epochs)
    built, results = {}, {}
    for name in models:
        log(f"building {name}")
        model = builders[name](image_size) if name in builders else build(name, image_size)
        built[name] = model
        results[name] = {"params": profile.count_params(model),
                         "flops": profile.count_flops(model),
                         "reported_top1": reported_top1(name), "keras": {}, "keras_min": {},
                         "tflite": {}}
    if keras_modes:
        log(f"Keras latency ({', '.join(keras_modes)}), {runs} runs, models interleaved")
        medians, fastest = keras_latencies(built, keras_modes, runs, warmup)
        for name in built:
            results[name]["keras"], results[name]["keras_min"] = medians[name], fastest[name]
    from keras_pf import tempfiles

    with tempfiles.private_dir("benchmark-") as tmp:
        files, layer_files = {}, {}  # (name, precision) -> path; name -> [(layer, path)]
        for name in list(built):
            if name in op_profile_models:
                log(f"exporting {name} layer by layer (op profile)")
                layer_files[name] = export_layers(built[name], os.path.join(tmp, name + "_ops"))
            if precisions:
                log(f"exporting {name} ({', '.join(precisions)})")
                for precision, path in export_all(built[name], tmp, name, precisions).items():
                    files[name, precision] = path
            built[name] = None  # free memory as we go
        if precisions:
            # every file of every precision in one process, interleaved run by run: the
            # precisions of one model are compared with each other (int8 vs its float32),
            # so they must share the machine's state as the models do
            order = [(name, precision) for precision in precisions for name in results]
            log(f"TFLite {', '.join(precisions)}: {runs} runs, all {len(order)} files "
                f"interleaved, {threads} threads")
            seconds = tflite_latencies([files[key] for key in order], threads, runs, warmup)
            for (name, precision), (median, fastest) in zip(order, seconds):
                path = files[name, precision]
                results[name]["tflite"][precision] = {
                    "seconds": median, "seconds_min": fastest,
                    "file_mb": os.path.getsize(path) / 2**20,
                    "peak_memory_mb": tflite_peak_memory(path, threads)}
        if precisions:  # what runs: BN folded? transposes? all delegated, every precision?
            from keras_pf.mobile.check import tflite_ops, undelegated_ops

            for name in results:
                if "float32" in precisions:
                    ops = {}
                    for op in tflite_ops(files[name, "float32"]):
                        ops[op] = ops.get(op, 0) + 1
                    results[name]["tflite_float32_ops"] = ops
                results[name]["tflite_undelegated_ops"] = {
                    precision: undelegated_ops(files[name, precision]) for precision in precisions}
        for name, layers in layer_files.items():
            log(f"op profile of {name}: {len(layers)} ops, each alone, {runs} runs")
            results[name]["op_profile"] = op_profile(layers, threads, runs, warmup)
        for name in fidelity_models:
            log(f"int8 fidelity of {name}: training {fidelity_epochs} epochs at "
                f"{fidelity_size} px, then {', '.join(precisions or PRECISIONS)}")
            model = (builders[name](fidelity_size) if name in builders
                     else build(name, fidelity_size, FIDELITY_CLASSES, logits=True))
            results[name]["fidelity"] = int8_fidelity(
                model, tmp, name, epochs=fidelity_epochs, precisions=precisions or PRECISIONS)
            del model
    info["load_average_end"] = list(os.getloadavg())
    _ratios(results, reference)
    report = {"machine": info, "reference": reference, "models": results}
    write_outputs(report, output_dir)
    return report


# ---------------------------------------------------------------------------- outputs


def _fmt(value, scale=1.0, digits=1):
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _with_ratio(value, ratio, scale=1.0, digits=1):
    if value is None:
        return "–"
    text = _fmt(value, scale, digits)
    return text if ratio is None else f"{text} ({ratio:.2f}x)"


def fastest_precision(row):
    """The precision of the model's fastest TFLite file (median), or None."""
    times = {p: m["seconds"] for p, m in row["tflite"].items() if m.get("seconds")}
    return min(times, key=times.get) if times else None


def precision_ratios(row):
    """Each precision's median time over the model's own float32 file's, and
    "int8_vs_dynamic"."""
    tflite = row["tflite"]
    own = {}
    base = tflite.get("float32", {}).get("seconds")
    for precision, measured in tflite.items():
        if base and measured.get("seconds"):
            own[precision] = measured["seconds"] / base
    if tflite.get("int8", {}).get("seconds") and tflite.get("dynamic", {}).get("seconds"):
        own["int8_vs_dynamic"] = tflite["int8"]["seconds"] / tflite["dynamic"]["seconds"]
    return own


def format_markdown(report):
    """The results as Markdown tables (figures with their ratio to the reference)."""
    info, ref, results = report["machine"], report["reference"], report["models"]
    key = "ratio_to_" + ref
    lines = [
        f"Measured on {info['cpu']}, {info['cores']} cores; TensorFlow {info['tensorflow']}, "
        f"Keras {info['keras']}, ai-edge-litert {info['ai_edge_litert']}; "
        f"{info['image_size']}x{info['image_size']}, batch 1, median of {info['runs']} runs "
        f"after {info['warmup']} warm-up; TFLite with the default (XNNPACK) delegate, "
        f"{info['tflite_threads']} threads. Load average "
        f"{info['load_average_start'][0]:.2f} at start, {info['load_average_end'][0]:.2f} "
        f"at end. Random weights; int8 calibrated on random images (timing only; the "
        f"fidelity table, if any, is on trained models). CPU features for int8: "
        f"{', '.join(info.get('int8_cpu_flags') or []) or 'unknown'}. "
        f"(x) = ratio to {ref}, pair by pair.",
        "",
    ]
    precisions = [p for p in PRECISIONS if any(p in r["tflite"] for r in results.values())]
    modes = [m for m in KERAS_MODES if any(m in r["keras"] for r in results.values())]
    head = ["Model", "Top-1 (reported)", "Params (M)", "GMACs"]
    head += [f"Keras {m} (ms)" for m in modes] + [f"TFLite {p} (ms)" for p in precisions]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results.items():
        ratio = row.get(key, {})
        top1 = row["reported_top1"]
        top1_text = "/".join(f"{v:g}" for v in sorted(set(top1.values()))) if top1 else "–"
        cells = [name, top1_text, _with_ratio(row["params"], ratio.get("params"), 1e-6),
                 _with_ratio(row["flops"], ratio.get("flops"), 1e-9, 2)]
        cells += [_with_ratio(row["keras"].get(m), ratio.get("keras", {}).get(m), 1e3)
                  for m in modes]
        fastest = fastest_precision(row)
        cells += [(lambda text: f"**{text}**" if p == fastest else text)(
                      _with_ratio(row["tflite"].get(p, {}).get("seconds"),
                                  ratio.get("tflite", {}).get(p, {}).get("seconds"), 1e3))
                  for p in precisions]
        lines.append("| " + " | ".join(cells) + " |")
    if len(precisions) > 1:
        lines += ["", "Bold: the model's fastest TFLite file. The same times against the "
                  "model's own float32 file (int8 also against its dynamic-range file):", ""]
        head = ["Model", "float32 (ms)"] + [f"{p} / float32" for p in precisions if p != "float32"]
        head += ["int8 / dynamic"] * ("int8" in precisions and "dynamic" in precisions)
        head += ["fastest"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, row in results.items():
            own = precision_ratios(row)
            cells = [name, _fmt(row["tflite"].get("float32", {}).get("seconds"), 1e3)]
            cells += [_fmt(own.get(p), digits=2) + "x" if own.get(p) else "–"
                      for p in precisions if p != "float32"]
            if "int8" in precisions and "dynamic" in precisions:
                cells.append(_fmt(own.get("int8_vs_dynamic"), digits=2) + "x"
                             if own.get("int8_vs_dynamic") else "–")
            cells.append(fastest_precision(row) or "–")
            lines.append("| " + " | ".join(cells) + " |")
    if precisions:
        lines += ["", "TFLite file size and peak memory (RSS increase of a fresh process "
                  "loading and running the file), MB:", ""]
        head = ["Model"] + [f"{p} size" for p in precisions] + [f"{p} memory" for p in precisions]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, row in results.items():
            ratio = row.get(key, {}).get("tflite", {})
            cells = [name]
            cells += [_with_ratio(row["tflite"].get(p, {}).get("file_mb"),
                                  ratio.get(p, {}).get("file_mb")) for p in precisions]
            cells += [_with_ratio(row["tflite"].get(p, {}).get("peak_memory_mb"),
                                  ratio.get(p, {}).get("peak_memory_mb")) for p in precisions]
            lines.append("| " + " | ".join(cells) + " |")
        if "int8" in precisions and "float32" in precisions:
            sizes = [f"{name} {row['tflite']['int8']['file_mb'] / row['tflite']['float32']['file_mb']:.2f}"
                     for name, row in results.items()
                     if "int8" in row["tflite"] and "float32" in row["tflite"]]
            lines += ["", "Int8 / float32 file size: " + ", ".join(sizes) + "."]
    if modes or precisions:
        lines += ["", "Fastest of the runs (less disturbed by a busy machine), ratio to "
                  f"{ref}:", ""]
        for name, row in results.items():
            ratio = row.get(key, {})
            parts = [f"Keras {m} {ratio['keras_min'][m]:.2f}x" for m in modes
                     if ratio.get("keras_min", {}).get(m) is not None]
            parts += [f"TFLite {p} {ratio['tflite'][p]['seconds_min']:.2f}x" for p in precisions
                      if ratio.get("tflite", {}).get(p, {}).get("seconds_min") is not None]
            if parts:
                lines.append(f"- {name}: " + ", ".join(parts) + ".")
    ops_rows = [(name, row["tflite_float32_ops"], row.get("tflite_undelegated_ops", {}))
                for name, row in results.items() if row.get("tflite_float32_ops")]
    if ops_rows:
        lines += ["", "TFLite float32 graphs (op: count; BatchNorm is folded into the "
                  "convolutions and ReLU fused when no MUL/SUB/RELU ops appear), and the ops "
                  "XNNPACK leaves to TFLite's builtin kernels in each precision's file:", ""]
        for name, ops, undelegated in ops_rows:
            text = ", ".join(f"{op} {n}" for op, n in sorted(ops.items(), key=lambda kv: -kv[1]))
            left = "; ".join(f"{precision} " + ", ".join(f"{op} {n}" for op, n in found.items())
                             for precision, found in undelegated.items() if found) or "none"
            lines.append(f"- {name}: {text}; outside XNNPACK: {left}.")
    profiled = [(name, row) for name, row in results.items() if row.get("op_profile")]
    if profiled:
        lines += ["", "Where the TFLite float32 time goes: each op exported alone (same "
                  "shape and weights) and timed; BatchNorm, a ReLU after a conv or add, and "
                  "a zero pad before a conv are fused into their neighbour and not counted. "
                  "GMAC/s: multiply-accumulate throughput.", ""]
        for name, row in profiled:
            prof = row["op_profile"]
            whole = row["tflite"].get("float32", {}).get("seconds")
            parts = []
            for kind, group in prof["by_kind"].items():
                text = f"{kind} {group['seconds'] * 1e3:.2f} ms ({group['count']}"
                if group["macs"]:
                    text += (f", {group['macs'] / 1e6:.0f} M MACs, "
                             f"{group['macs'] / group['seconds'] / 1e9:.0f} GMAC/s")
                parts.append(text + ")")
            total = f"{prof['seconds'] * 1e3:.2f} ms summed over {len(prof['layers'])} ops"
            if whole is not None:
                total += f" (whole graph {whole * 1e3:.2f} ms)"
            lines.append(f"- {name}: {total}: " + ", ".join(parts) + ".")
    checked = [(name, row["fidelity"]) for name, row in results.items() if row.get("fidelity")]
    if checked:
        first = checked[0][1]
        shown = [p for p in PRECISIONS if p in first]
        lines += ["", f"Fidelity of each file on a trained model: the architecture at "
                  f"{info.get('fidelity_size', '?')} px trained {first['epochs']} epochs on "
                  f"{first['images']['train']} generated images ({FIDELITY_CLASSES} "
                  f"grating orientations), each file compared with the Keras model on "
                  f"{first['images']['test']} other images; int8 calibrated on "
                  f"{first['images']['calibration']} training images. Top-1 agreement with "
                  "Keras / mean output error relative to the mean absolute output "
                  "(outputs are logits):", ""]
        head = ["Model", "Keras top-1"] + [f"{p}: agreement / error" for p in shown]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, fid in checked:
            cells = [name, f"{100 * fid['keras_top1']:.1f}%"]
            cells += [f"{100 * fid[p]['top1_agreement']:.1f}% / {100 * fid[p]['relative_error']:.2f}%"
                      for p in shown]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Reported top-1: keras.applications' own figures for ResNet50 (74.9; the "
              "paper's R50 baseline is 76.2) and MobileNetV2; the paper's for the others "
              "(several figures: training recipes / longer training)."]
    return "\n".join(lines) + "\n"


def plot(report, path):
    """PNG of reported top-1 against latency (TFLite float32, else compiled Keras)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xlabel = "TFLite float32 latency (ms)"
    for name, row in report["models"].items():
        seconds = row["tflite"].get("float32", {}).get("seconds")
        if seconds is None:
            seconds, xlabel = row["keras"].get("compiled"), "Keras compiled latency (ms)"
        top1 = sorted(row["reported_top1"].values())
        if seconds is None or not top1:
            continue
        x = seconds * 1e3
        baseline = name in BASELINES
        ax.plot([x] * len(top1), top1, "-o", color="gray" if baseline else "tab:blue",
                markersize=5)
        ax.annotate(name, (x, top1[-1]), textcoords="offset points", xytext=(5, 3), fontsize=8)
    info = report["machine"]
    ax.set_xlabel(xlabel)
    ax.set_ylabel("reported ImageNet top-1 (%)")
    ax.set_title(f"{info['image_size']}px, batch 1, {info['tflite_threads']} threads, "
                 "lines span the reported figures (recipes, longer training), "
                 f"{info['cpu'][:40]}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


def write_outputs(report, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "results.json"), json.dumps(report, indent=2) + "\n")
    write_atomic(os.path.join(output_dir, "results.md"), format_markdown(report))
    plot(report, os.path.join(output_dir, "top1_vs_latency.png"))
