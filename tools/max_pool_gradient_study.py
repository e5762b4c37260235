"""How the max-pool gradient formulations compare (issue 23), CPU.

    python tools/max_pool_gradient_study.py pools            # per pool shape (TensorFlow)
    python tools/max_pool_gradient_study.py models [--jit]   # whole train steps (any
                                                             # KERAS_BACKEND)

`pools`: forward + backward of one 3x3 max-pool at the shapes R50-max has at batch 8,
224x224, for TensorFlow's own gradient and keras_pf's mask gradient, without and with
XLA; "forward" is the pool alone. `models`: `train_on_batch` of ResNet50, R50-max and
R50-hybrid with each gradient ("framework": before issue 23, TensorFlow's MaxPoolGrad or,
under XLA, select-and-scatter; "auto": FastMaxPooling2D's choice) and their bounds
(keras_pf.benchmark.train), interleaved rounds in one process. Results: README
"Benchmarks" (training).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from keras_pf.benchmark.profile import median_seconds  # noqa: E402

# (input shape, strides, padding) of R50-max's pools at batch 8, 224x224
SHAPES = [((8, 114, 114, 64), 2, "valid"), ((8, 56, 56, 64), 1, "same"),
          ((8, 58, 58, 128), 2, "valid"), ((8, 28, 28, 128), 1, "same"),
          ((8, 30, 30, 256), 2, "valid"), ((8, 14, 14, 256), 1, "same"),
          ((8, 16, 16, 512), 2, "valid"), ((8, 7, 7, 512), 1, "same")]


def _median_ms(call, runs, warmup=3):
    return 1e3 * median_seconds(call, runs, warmup)


def pools(runs):
    import tensorflow as tf

    from keras_pf.models.layers import FastMaxPooling2D

    print("| input | stride | forward | framework | mask | framework + XLA | mask + XLA |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape, strides, padding in SHAPES:
        x = tf.constant(rng.random(shape, dtype=np.float32))
        cells = []
        layer = FastMaxPooling2D(3, strides=strides, padding=padding)
        forward = tf.function(lambda x: layer(x))
        cells.append(_median_ms(lambda: forward(x).numpy(), runs))
        for jit in (False, True):
            for gradient in ("framework", "mask"):
                pool = FastMaxPooling2D(3, strides=strides, padding=padding)
                pool.gradient = gradient

                @tf.function(jit_compile=jit)
                def step(x, pool=pool):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = pool(x)
                    return tape.gradient(y, x, output_gradients=y)

                cells.append(_median_ms(lambda: step(x).numpy(), runs))
        print(f"| {shape[1:]} | {strides} | " + " | ".join(f"{c:.1f} ms" for c in cells) + " |",
              flush=True)


def models(rounds, jit, names=("PFResNet50Max", "PFResNet50Hybrid")):
    from keras_pf.benchmark import train as benchmark_train
    from keras_pf.benchmark.run import build
    from keras_pf.models.layers import FastMaxPooling2D

    built = {"ResNet50": build("ResNet50")}
    for name in names:
        for gradient in ("auto", "framework"):
            model = build(name)
            for layer in model.layers:
                if isinstance(layer, FastMaxPooling2D):
                    layer.gradient = gradient
            built[f"{name} [{gradient}]"] = model
        built[name + benchmark_train.BOUND_SUFFIX] = benchmark_train.bound_network(model)
    # without --jit as fit compiles by default ("auto": XLA on JAX), as benchmark --train
    times = benchmark_train.time_steps(built, 8, rounds, 1, jit_compile=True if jit else "auto",
                                       predict=False,
                                       log=lambda m: print(m, file=sys.stderr, flush=True))
    ref = float(np.median(times["ResNet50"]["train"]))
    print(f"XLA: {bool(built['ResNet50'].jit_compile)}; median of {rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| model | train step | ratio to ResNet50 |")
    print("|---|---|---|")
    for name, kinds in times.items():
        median = float(np.median(kinds["train"]))
        print(f"| {name} | {median * 1e3:.0f} ms | {median / ref:.3f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("pools", "models"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--models", nargs="+", default=["PFResNet50Max", "PFResNet50Hybrid"])
    args = parser.parse_args()
    if args.what == "pools":
        pools(args.runs)
    else:
        models(args.runs, args.jit, args.models)
