"""Model size, FLOPs and latency, counted from the Keras graph (backend-agnostic)."""

import time

import numpy as np

import keras


def count_params(model, trainable_only=True):
    """Parameters as the paper counts them: trainable weights (BatchNorm's running
    statistics excluded)."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(np.prod(w.shape) for w in weights))


_COUNTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
            keras.layers.MultiHeadAttention)


def layer_macs(layer):
    """Multiply-accumulates of one layer of a built model (0 for layers without any)."""
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    if not isinstance(layer, _COUNTED):
        return 0
    out = layer.output.shape
    inp = layer.input[0].shape if isinstance(layer.input, (list, tuple)) else layer.input.shape
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return int(np.prod(out[1:])) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return int(np.prod(out[1:])) * kh * kw * inp[-1] // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(out[1:])) * inp[-1]
    if isinstance(layer, keras.layers.MultiHeadAttention):
        n, c = inp[1], inp[-1]
        heads, key_dim = layer.num_heads, layer.key_dim
        projections = 3 * n * c * heads * key_dim + n * heads * key_dim * c
        return projections + 2 * n * n * heads * key_dim
    raise AssertionError(layer)  # unreachable: every _COUNTED type is handled above


def count_flops(model):
    """Multiply-accumulates of one image's forward pass (the paper's "FLOPs", as
    ResNet50's 4.1 G): convolutions, dense layers and attention matmuls; normalization,
    activations and pools are not counted. Input height and width must be fixed."""
    if any(d is None for d in model.input_shape[1:]):
        raise ValueError("count_flops needs a model built with a fixed input_shape")
    return int(sum(layer_macs(layer) for layer in model.layers))


def median_seconds(call, runs=20, warmup=3):
    """Median wall-clock seconds of `call()` over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def random_batch(model, batch_size=1, seed=0):
    """A float32 batch of uniform [0, 1) images of the model's input shape."""
    shape = (batch_size, *model.input_shape[1:])
    return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


def compiled_predict(model, jit_compile=False):
    """A function `x -> numpy outputs` running Keras' compiled predict step (a
    `tf.function` on TensorFlow; XLA-compiled if `jit_compile`), as `model.predict`
    would, without its per-call data-adapter overhead. Recompiles `model` (its
    optimizer and loss, if any, are dropped): meant for benchmark-only models."""
    model.compile(jit_compile=jit_compile)
    model.make_predict_function(force=True)
    return lambda x: model.predict_on_batch(x)


def measure_latency(model, batch_size=1, runs=20, warmup=3, mode="eager"):
    """Median seconds of one forward pass on a random batch.

    `mode`: "eager" (`model(x, training=False)`), "compiled" (Keras' compiled predict
    step, see `compiled_predict`) or "xla" (the same, XLA-compiled). The compiled modes
    recompile `model`.
    """
    x = random_batch(model, batch_size)
    if mode == "eager":
        call = lambda: np.asarray(model(x, training=False))  # noqa: E731
    elif mode in ("compiled", "xla"):
        predict = compiled_predict(model, jit_compile=mode == "xla")
        call = lambda: predict(x)  # noqa: E731
    else:
        raise ValueError(f"mode must be 'eager', 'compiled' or 'xla'; received {mode!r}")
    return median_seconds(call, runs, warmup)
