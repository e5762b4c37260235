"""The benchmark's LiteRT timing child: a fresh process that imports only numpy and the
LiteRT interpreter (not TensorFlow), so that its resident set is the interpreter's.
Run by its file path, `python litert_child.py MODE THREADS RUNS WARMUP FILE...`; prints
one JSON line. Modes:

- `latency`: every file's interpreter loaded, then timed in turn, run after run, so that
  a load spike of the machine hits all files alike and ratios stay fair; `[[median,
  fastest], ...]` seconds per file.
- `consecutive` (the op profile): each file timed on its own, run after run, as an op
  runs inside its graph: its threads awake and its input just written (interleaving
  would time cold caches and sleeping thread pools instead). A quarter second of work
  first, so that the first file is not timed on an idle CPU's clock.
- `memory`: the peak resident set over loading, allocating and running one file, minus
  the resident set before (the peak is reset first, so that the imports' transient
  peaks don't count), in MB. Linux only (null elsewhere).
"""

import json
import sys
import time

import numpy as np


def rss_kb(field):
    """Linux: current (VmRSS) or peak (VmHWM) resident set, kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])


def load(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).uniform(0, 1, inp["shape"]).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    return interp


def latency(paths, threads, runs, warmup):
    interps = [load(path, threads) for path in paths]
    for interp in interps:
        for _ in range(warmup):
            interp.invoke()
    times = [[] for _ in paths]
    for _ in range(runs):
        for interp, series in zip(interps, times):
            start = time.perf_counter()
            interp.invoke()
            series.append(time.perf_counter() - start)
    return [[float(np.median(series)), float(np.min(series))] for series in times]


def consecutive(paths, threads, runs, warmup):
    first, start = load(paths[0], threads), time.perf_counter()
    while time.perf_counter() - start < 0.25:
        first.invoke()
    del first
    results = []
    for path in paths:
        interp = load(path, threads)
        for _ in range(warmup):
            interp.invoke()
        series = []
        for _ in range(runs):
            start = time.perf_counter()
            interp.invoke()
            series.append(time.perf_counter() - start)
        results.append([float(np.median(series)), float(np.min(series))])
        del interp
    return results


def memory(paths, threads, runs, warmup):
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (imported before the baseline)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = rss_kb("VmRSS")
    except OSError:
        base = None
    interp = load(paths[0], threads)
    for _ in range(max(warmup, 1)):
        interp.invoke()
    return None if base is None else (rss_kb("VmHWM") - base) / 1024


MODES = {"latency": latency, "consecutive": consecutive, "memory": memory}


def main(argv):
    mode, threads, runs, warmup, paths = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4:]
    print(json.dumps(MODES[mode](paths, threads, runs, warmup)))


if __name__ == "__main__":
    main(sys.argv[1:])
