"""`keras-pf benchmark --train`: the fit loop's train-step time and images/s of each model
against `keras.applications.ResNet50`, on the current Keras backend, with the "bound"
networks timed in the same run.

A bound network is a study, not a model keras_pf offers: the same network with every
max-pool made free, i.e. every stride-1 max-pool replaced by identity and every strided
one by a strided slice (`Subsample`: every stride-th row and column, what a 1x1-window
pool keeps; and the zero padding that only fed it removed), so that shapes,
convolutions, BatchNorms, adds and stem stay. (A 1x1-window MaxPooling2D is not free: under
XLA its gradient is a select-and-scatter, 20-50x a slice's on CPU.) The gap between a
model's ratio to ResNet50 and its bound's is what its max-pools cost in the train step.

With `keras_layers=True` each model with keras_pf's fast layers is also timed with keras'
own layers in their place (`keras_pf.models.layers.builtin_class`: `MaxPooling2D` for
`FastMaxPooling2D`, `Conv2D` for PiT's `FastGroupedConv2D`; another study: the network as
it was built before issue 23, same weights and values), so that "no slower than keras'
layers" is measured in the same run rather than against an older one.

One process; the models are timed in interleaved rounds (each model one step per round),
as the latency tables of `keras_pf.benchmark.run`, so a load spike of the machine hits all of
them alike. Each step is `model.train_on_batch` (the compiled train function `fit` runs;
SGD, sparse categorical cross-entropy) on one fixed random batch; `predict_on_batch` on
the same batch is timed too. Weights are random: time does not depend on their values.
"""

import json
import os
import time

import keras
import numpy as np

from keras_pf._compat.keras import outbound_nodes
from keras_pf.benchmark.run import DEFAULT_MODELS, REFERENCE, build, machine
from keras_pf.files import write_atomic
from keras_pf.models import resolve
from keras_pf.models.layers import builtin_class

# The gap to the bound (as ratios to ResNet50) that issue 23 sets for the ResNets.
TARGET_GAP = 0.04
TARGET_MODELS = ("PFResNet50Max", "PFResNet50Hybrid")
BOUND_SUFFIX = " (bound)"
KERAS_LAYERS_SUFFIX = " (keras layers)"


# ------------------------------------------------------------------------------ bound


def _is_max_pool(layer):
    return isinstance(layer, keras.layers.MaxPooling2D)


def _strides(layer):
    return tuple(layer.strides)


class Subsample(keras.layers.Layer):
    """Every `strides`-th row and column, from the first: a strided max-pool made free,
    with the output shape of a 1x1-window "valid" one."""

    def __init__(self, strides, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.strides, self.data_format = tuple(strides), data_format

    def call(self, inputs):
        rows, columns = (slice(None, None, s) for s in self.strides)
        if self.data_format == "channels_first":
            return inputs[:, :, rows, columns]
        return inputs[:, rows, columns, :]

    def compute_output_shape(self, shape):
        axes = (2, 3) if self.data_format == "channels_first" else (1, 2)
        shape = list(shape)
        for axis, s in zip(axes, self.strides):
            shape[axis] = None if shape[axis] is None else -(-shape[axis] // s)
        return tuple(shape)


def bound_network(model):
    """The bound of functional `model` (see the module docstring): a new model with the
    same layer names and weights except the max-pools. Raises ValueError if `model` has
    no max-pool or a free pool would change a shape."""
    pools = [layer for layer in model.layers if _is_max_pool(layer)]
    if not pools:
        raise ValueError(f"Model '{model.name}' has no MaxPooling2D layer: it has no bound")
    # zero paddings whose only consumers are strided max-pools go with them
    feeding = {id(layer) for layer in model.layers
               if isinstance(layer, keras.layers.ZeroPadding2D) and outbound_nodes(layer)
               and all(_is_max_pool(node.operation) and max(_strides(node.operation)) > 1
                       for node in outbound_nodes(layer))}

    def clone(layer):
        if id(layer) in feeding:
            return keras.layers.Identity(name=layer.name)
        if _is_max_pool(layer):
            if max(_strides(layer)) == 1:
                return keras.layers.Identity(name=layer.name)
            return Subsample(_strides(layer), layer.data_format, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        bound = keras.models.clone_model(model, clone_function=clone)
    except ValueError as error:
        raise ValueError(f"Model '{model.name}': making its max-pools free changes a shape "
                         f"({error})") from None
    for pool in pools:
        if tuple(bound.get_layer(pool.name).output.shape) != tuple(pool.output.shape):
            raise ValueError(f"Model '{model.name}': the free form of '{pool.name}' changes "
                             "its output shape")
    _copy_weights(model, bound)
    return keras.Model(bound.inputs, bound.outputs, name=model.name + "_bound")


def _copy_weights(source, clone):
    """Weights of `source`'s layers into the same-named layers of `clone`."""
    originals = {layer.name: layer for layer in source.layers}
    for layer in clone.layers:
        if layer.weights:
            layer.set_weights(originals[layer.name].get_weights())


def _has_fast_layers(model):
    return any(builtin_class(layer) is not type(layer) for layer in model.layers)


def keras_layers_network(model):
    """Functional `model` with keras' own layer (`builtin_class`, same config) in place of
    each of keras_pf's fast ones (FastMaxPooling2D, FastGroupedConv2D), the other layers
    and all weights unchanged: the same values, the framework's op and gradient on every
    backend. Raises ValueError if `model` has no such layer."""
    if not _has_fast_layers(model):
        raise ValueError(f"Model '{model.name}' has no FastMaxPooling2D or FastGroupedConv2D "
                         "layer")

    def clone(layer):
        return builtin_class(layer).from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone)
    _copy_weights(model, twin)
    return keras.Model(twin.inputs, twin.outputs, name=model.name + "_keras_layers")


def pool_counts(model):
    """`{"stride_1": n, "strided": n, "subsampled": n}`: the model's max-pools, and the
    strided slices (`Subsample`) that a bound has in place of strided ones."""
    counts = {"stride_1": 0, "strided": 0, "subsampled": 0}
    for layer in model.layers:
        if isinstance(layer, Subsample):
            counts["subsampled"] += 1
        elif _is_max_pool(layer):
            counts["stride_1" if max(_strides(layer)) == 1 else "strided"] += 1
    return counts


# ----------------------------------------------------------------------------- timing


def time_steps(models, batch_size=8, rounds=5, warmup=2, jit_compile="auto", predict=True,
               log=print, seed=0):
    """`{name: {"train": [seconds per round], "predict": [...]}}`: `train_on_batch` (and
    `predict_on_batch`) of every model, one call each per round, models interleaved.
    `jit_compile` goes to `model.compile`: "auto" is what `fit` does by default (XLA on
    JAX; none on PyTorch or on TensorFlow without an accelerator)."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name, model in models.items():
        shape = (batch_size, *model.input_shape[1:])
        if shape not in batches:
            batches[shape] = rng.uniform(0, 1, shape).astype("float32")
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit_compile)
    labels = {name: rng.integers(0, model.output_shape[-1], batch_size)
              for name, model in models.items()}
    calls = {}
    for name, model in models.items():
        x = batches[(batch_size, *model.input_shape[1:])]
        calls[name] = {"train": (lambda m, x, y: lambda: m.train_on_batch(x, y))(model, x, labels[name])}
        if predict:
            calls[name]["predict"] = (lambda m, x: lambda: m.predict_on_batch(x))(model, x)
    for name, kinds in calls.items():
        log(f"compiling and warming up {name}")
        for call in kinds.values():
            for _ in range(max(warmup, 1)):  # the first call traces (and compiles)
                call()
    times = {name: {kind: [] for kind in kinds} for name, kinds in calls.items()}
    for round_ in range(rounds):
        log(f"round {round_ + 1}/{rounds}")
        for kind in ("train", "predict"):
            for name, kinds in calls.items():
                if kind in kinds:
                    start = time.perf_counter()
                    kinds[kind]()
                    times[name][kind].append(time.perf_counter() - start)
    return times


def _summary(series, batch_size):
    median = float(np.median(series))
    return {"seconds": median, "seconds_min": float(np.min(series)),
            "images_per_second": batch_size / median, "rounds": [float(s) for s in series]}


def benchmark_training(models=None, image_size=224, batch_size=8, rounds=5, warmup=2,
                       jit_compile="auto", predict=True, bounds=True, keras_layers=False,
                       builders=None, reference=REFERENCE, output_dir="benchmarks", log=print):
    """Time `models` (default: `keras_pf.benchmark.run.DEFAULT_MODELS`) and the bounds of those
    with max-pools (not of `reference`; with `keras_layers`, their `keras_layers_network`s
    too), write `train_<backend>[_jit].json` and `.md` to
    `output_dir`, and return the report. `builders`: optional `{name: callable(image_size)
    -> model}` for models outside `keras_pf.benchmark.run.build` (e.g. small test models)."""
    models = list(models or DEFAULT_MODELS)
    if rounds < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"Need rounds >= 1, warmup >= 0 and batch size >= 1; received "
                         f"rounds={rounds}, warmup={warmup}, batch size={batch_size}")
    if reference not in models:
        models.insert(0, reference)
    builders = builders or {}
    for name in models:  # unknown names fail before minutes of building
        if name not in builders:
            resolve.check_name(name, baselines=True)
    info = machine()  # with the backend
    info.update(image_size=image_size, batch_size=batch_size, rounds=rounds, warmup=warmup,
                jit_compile_requested=jit_compile, keras_layers=keras_layers,
                step="train_on_batch, SGD, sparse categorical cross-entropy",
                weights="random (weights=None)")
    built, rows = {}, {}
    for name in models:
        log(f"building {name}")
        model = builders[name](image_size) if name in builders else build(name, image_size)
        built[name] = model
        rows[name] = {"study": False, "max_pools": pool_counts(model)}
        if bounds and name != reference and any(rows[name]["max_pools"].values()):
            bound = bound_network(model)
            built[name + BOUND_SUFFIX] = bound
            rows[name + BOUND_SUFFIX] = {"study": True, "bound_of": name,
                                         "max_pools": pool_counts(bound)}
        if keras_layers and name != reference and _has_fast_layers(model):
            built[name + KERAS_LAYERS_SUFFIX] = keras_layers_network(model)
            rows[name + KERAS_LAYERS_SUFFIX] = {"study": True, "keras_layers_of": name,
                                               "max_pools": rows[name]["max_pools"]}
    times = time_steps(built, batch_size, rounds, warmup, jit_compile, predict, log)
    # what Keras resolved "auto" to (the same for every model here: all support XLA)
    info["jit_compile"] = bool(built[reference].jit_compile)
    for name, kinds in times.items():
        for kind, series in kinds.items():
            rows[name][kind] = _summary(series, batch_size)
    info["load_average_end"] = list(os.getloadavg())
    report = {"machine": info, "reference": reference, "models": rows}
    _ratios(report)
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, output_stem(info["backend"], jit_compile is True))
    write_atomic(stem + ".json", json.dumps(report, indent=2) + "\n")
    write_atomic(stem + ".md", format_markdown(report))
    return report


def output_stem(backend, jit_compile):
    return f"train_{backend}" + ("_jit" if jit_compile else "")


def gap_interval(model, bound, reference, level=0.95, resamples=2000, seed=0):
    """`(low, high)`: a bootstrap interval of the gap `median(model) / median(reference) -
    median(bound) / median(reference)` from three series of per-round times, resampling
    whole rounds (the three were timed in the same round, so a round's load stays with
    all three). How far the gap could move in another run of the same length: on a
    shared 2-core machine single steps vary by 30%, so a gap of a few hundredths is only
    told apart from noise when the interval is narrow enough."""
    series = np.asarray([model, bound, reference], dtype=np.float64)
    if series.ndim != 2 or series.shape[1] < 1:
        raise ValueError("gap_interval needs three equally long non-empty series")
    rounds = series.shape[1]
    picks = np.random.default_rng(seed).integers(0, rounds, (resamples, rounds))
    medians = np.median(series[:, picks], axis=2)  # (3, resamples)
    gaps = (medians[0] - medians[1]) / medians[2]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(gaps, [tail, 100 - tail])
    return float(low), float(high)


def _ratios(report):
    """Ratios to the reference; for each model with a bound, the gaps (model ratio minus
    bound ratio) with the train gap's 95% interval (`gap_interval`) and, for
    `TARGET_MODELS`, whether the train gap meets `TARGET_GAP`; for each model with a
    keras-layers twin, the gain over it (twin ratio minus model ratio) with its interval."""
    rows, ref = report["models"], report["models"][report["reference"]]
    for row in rows.values():
        row["ratio"] = {kind: row[kind]["seconds"] / ref[kind]["seconds"]
                        for kind in ("train", "predict") if kind in row and kind in ref}

    def difference(row, slower, faster, key, interval_key):
        # slower's ratio minus faster's, per kind, and the train difference's interval
        row[key] = {kind: slower["ratio"][kind] - faster["ratio"][kind]
                    for kind in slower["ratio"] if kind in faster["ratio"]}
        if "train" in row[key]:
            row[interval_key] = list(gap_interval(
                slower["train"]["rounds"], faster["train"]["rounds"], ref["train"]["rounds"]))

    for name, row in rows.items():
        twin = rows.get(name + KERAS_LAYERS_SUFFIX)
        if twin is not None:  # > 0: faster than with keras' layers
            difference(row, twin, row, "gain_over_keras_layers", "train_gain_interval_95")
        bound = rows.get(name + BOUND_SUFFIX)
        if bound is None:
            continue
        difference(row, row, bound, "gap_to_bound", "train_gap_interval_95")
        if name in TARGET_MODELS:
            row["target"] = {"train_gap_at_most": TARGET_GAP,
                             "met": row["gap_to_bound"]["train"] <= TARGET_GAP}


# ---------------------------------------------------------------------------- outputs


def _framework(info):
    """The backend's framework and its version, e.g. "PyTorch 2.13.0"."""
    name, key = {"jax": ("JAX", "jax"), "torch": ("PyTorch", "torch")}.get(
        info["backend"], ("TensorFlow", "tensorflow"))
    return f"{name} {info.get(key, 'unknown')}"


def format_markdown(report):
    info, ref, rows = report["machine"], report["reference"], report["models"]
    requested = info.get("jit_compile_requested", info["jit_compile"])
    mode = ("XLA (`jit_compile=True`)" if requested is True else
            "XLA (Keras' default here, `jit_compile=\"auto\"`)" if info["jit_compile"] else
            "no XLA")
    lines = [
        f"Train step on the {info['backend']} backend, {mode}: {info['cpu']}, "
        f"{info['cores']} cores; {_framework(info)}, Keras {info['keras']}; "
        f"batch {info['batch_size']}, {info['image_size']}x{info['image_size']}, "
        f"`train_on_batch` (SGD), median of {info['rounds']} interleaved rounds after "
        f"{info['warmup']} warm-up; load average {info['load_average_start'][0]:.2f} at "
        f"start, {info['load_average_end'][0]:.2f} at end. (x) = ratio to {ref}. "
        f"*(bound)*: a study, not a model: every max-pool made free (stride 1: identity; "
        f"strided: a strided slice); gap: the model's ratio minus its bound's, "
        f"[95% interval, resampling rounds]."
        + (" *(keras layers)*: a study, the same network with keras' own MaxPooling2D and "
           "Conv2D in place of FastMaxPooling2D and FastGroupedConv2D (as built before "
           "issue 23); gain: its ratio minus the model's (> 0: the model is faster)."
           if info.get("keras_layers") else ""),
        "",
    ]
    predict = any("predict" in row for row in rows.values())
    head = ["Model", "Train step (ms)", "Images/s", "Train gap to bound"]
    twins = any("gain_over_keras_layers" in row for row in rows.values())
    if twins:
        head += ["Train gain over keras layers"]
    if predict:
        head += ["Predict (ms)", "Predict gap"]
        if twins:
            head += ["Predict gain"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def with_interval(difference, interval):
        text = f"{difference['train']:+.3f}" if "train" in difference else "–"
        return text + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "")

    for name, row in rows.items():
        label = f"*{name}*" if row["study"] else name
        train = row["train"]
        cells = [label, f"{train['seconds'] * 1e3:.0f} ({row['ratio']['train']:.2f}x)",
                 f"{train['images_per_second']:.1f}"]
        gap = row.get("gap_to_bound", {})
        text = with_interval(gap, row.get("train_gap_interval_95"))
        if "target" in row:
            text += f" (target <= {row['target']['train_gap_at_most']}: " \
                    f"{'met' if row['target']['met'] else 'not met'})"
        cells.append(text)
        gain = row.get("gain_over_keras_layers", {})
        if twins:
            cells.append(with_interval(gain, row.get("train_gain_interval_95")))
        if predict:
            cells.append(f"{row['predict']['seconds'] * 1e3:.0f} ({row['ratio']['predict']:.2f}x)"
                         if "predict" in row else "–")
            cells.append(f"{gap['predict']:+.3f}" if "predict" in gap else "–")
            if twins:
                cells.append(f"{gain['predict']:+.3f}" if "predict" in gain else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Fastest round, ratio to {ref}: " + ", ".join(
        f"{name} {row['train']['seconds_min'] / rows[ref]['train']['seconds_min']:.2f}x"
        for name, row in rows.items()) + "."]
    return "\n".join(lines) + "\n"

