"""The layers of keras_pf that Keras does not have, and the resize they rely on.

Everything parameter-free in these networks is a built-in Keras layer (average pool, GELU
as an `Activation`) or a built-in one with another gradient: `FastMaxPooling2D`, keras'
max-pool whose backward pass is as cheap as its forward one under XLA. PiT's pooling
convolution is `FastGroupedConv2D`, keras' grouped Conv2D with a train step that avoids
XLA's slow grouped-convolution gradient. Two more custom
layers: the learned position embedding of ViT/PiT, which must resize itself when weights
trained at one input size are loaded at another, and a LayerNormalization whose exported
graph the phone GPU delegate accepts; and one activation, an exact GELU written through
`erf` that every export format has.
"""

import functools
import itertools

import numpy as np

import keras
from keras import ops


def torch_bicubic_matrix(in_size, out_size, a=-0.75):
    """(out_size, in_size) matrix of PyTorch's 1-D bicubic interpolation.

    Reproduces `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`:
    source coordinate `(i + 0.5) * in/out - 0.5`, Keys kernel with a = -0.75, border
    indices clamped, no antialiasing. (TensorFlow's bicubic uses a = -0.5: close, not equal.)
    """
    def kernel(t):
        t = abs(t)
        if t <= 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        if t < 2:
            return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return 0.0

    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5
        base = int(np.floor(src))
        frac = src - base
        for k in range(-1, 3):
            index = min(max(base + k, 0), in_size - 1)
            matrix[i, index] += kernel(k - frac)
    return matrix


def resize_grid(grid, out_hw):
    """Resize a `(1, H, W, C)` array to `(1, *out_hw, C)` as PyTorch's bicubic would."""
    grid = np.asarray(grid)
    _, h, w, _ = grid.shape
    if (h, w) == tuple(out_hw):
        return grid
    rows = torch_bicubic_matrix(h, out_hw[0])
    cols = torch_bicubic_matrix(w, out_hw[1])
    out = np.einsum("ih,bhwc,jw->bijc", rows, grid.astype(np.float64), cols)
    return out.astype(grid.dtype)


SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)


@keras.saving.register_keras_serializable(package="keras_pf", name="gelu")
def gelu(x):
    """Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))`: PyTorch's `nn.GELU()` formula.

    Keras' `"gelu"` computes the same through `erfc` on TensorFlow, which ONNX has no
    operator for (tf2onnx writes a graph ONNX Runtime refuses). `erf` is ONNX's `Erf`
    (opset 9+) and OpenVINO's; TFLite's converter fuses this exact op order, as it does
    Keras' form, into its single GELU op. (Other orders, e.g. `x * (0.5 * (1 + erf))`,
    are not fused and leave an Erf op that TFLite has no builtin for.) Used as
    `keras.layers.Activation(gelu)`; saved as `"keras_pf>gelu"`.
    """
    return 0.5 * x * (1.0 + ops.erf(x * SQRT_HALF))


@keras.saving.register_keras_serializable(package="keras_pf")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned `(1, H, W, C)` position embedding to a `(B, H, W, C)` token grid.

    Weights saved for another grid size are resized on load with PyTorch's bicubic
    kernel, as the original PiT does at run time, so that a model built for 256x256
    inputs loads 224x224 weights and matches the original at 256x256.
    """

    def build(self, input_shape):
        _, h, w, c = input_shape
        if h is None or w is None:
            raise ValueError(
                "The position embedding needs a fixed token grid: pass a fixed "
                "`input_shape`, e.g. input_shape=(224, 224, 3)."
            )
        self.embedding = self.add_weight(
            shape=(1, h, w, c),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)

    def load_own_variables(self, store):
        value = np.asarray(store["0"])
        target = tuple(self.embedding.shape)
        if value.ndim != 4 or value.shape[0] != 1 or value.shape[3] != target[3]:
            raise ValueError(
                f"Layer '{self.name}': position embedding of shape {value.shape} cannot "
                f"be loaded into {target}: the channel count differs."
            )
        self.embedding.assign(resize_grid(value, target[1:3]))


@keras.saving.register_keras_serializable(package="keras_pf")
class BroadcastSafeLayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` (same arguments, weights `gamma`/`beta`, results
    within float rounding) computed as `(x - mean) * rsqrt(var + eps) * gamma + beta`.

    Keras folds gamma into the per-token scale first (`rsqrt(var + eps) * gamma`, a
    `(..., 1) x (C,)` product) and multiplies `-mean` by that scale, so the TFLite graph
    has MULs where neither operand covers the other, or where the smaller one comes
    first. TFLite's GPU delegate rejects the former ("MUL requires one tensor that not
    less than second in all dimensions") and so runs every LayerNorm on the CPU. Here
    each elementwise op takes the full `(..., C)` tensor as its first operand.
    """

    def call(self, inputs):
        if self.rms_scaling:  # x * rsqrt(mean(x^2)) * gamma: already full tensor first
            return super().call(inputs)
        # at least float32, as Keras does for float16/bfloat16 inputs
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        centered = x - ops.mean(x, axis=self.axis, keepdims=True)
        variance = ops.mean(ops.square(centered), axis=self.axis, keepdims=True)
        x = centered * ops.rsqrt(variance + self.epsilon)
        # gamma/beta at the input's rank (1 on the axes not normalized), second operand
        shape = [1] * len(inputs.shape)
        for dim in self.axis:
            shape[dim] = inputs.shape[dim]
        if self.gamma is not None:
            x = x * ops.reshape(ops.cast(self.gamma, dtype), shape)
        if self.beta is not None:
            x = x + ops.reshape(ops.cast(self.beta, dtype), shape)
        return ops.cast(x, self.compute_dtype)


# ------------------------------------------------------------------------- max-pool


def _pool_geometry(length, size, stride, padding):
    """`(outputs, pad_before, pad_after)` of a 1-D pooling window along an axis of
    `length`, with TensorFlow's (and XLA's, and Keras') "same" convention: the smaller
    half before."""
    if padding == "valid":
        return (length - size) // stride + 1, 0, 0
    outputs = -(-length // stride)
    total = max((outputs - 1) * stride + size - length, 0)
    return outputs, total // 2, total - total // 2


def _slice_axes(x, bounds):
    """`x` sliced along each axis of `bounds` ({axis: (start, stop[, step])})."""
    index = [slice(None)] * len(x.shape)
    for axis, bound in bounds.items():
        index[axis] = slice(*bound)
    return x[tuple(index)]


def _pad_axes(x, widths_by_axis, value=0):
    """`x` padded with `value` along each axis of `widths_by_axis` ({axis: (before, after)})."""
    if not any(any(widths) for widths in widths_by_axis.values()):
        return x
    widths = [(0, 0)] * len(x.shape)
    for axis, pair in widths_by_axis.items():
        widths[axis] = pair
    return ops.pad(x, widths, constant_values=value)


def _offset_dtype(size):
    return "int8" if size <= 127 else "int32"


def _window_positions(sizes):
    """`(index, per-axis offsets)` of every window element, in row-major order."""
    return enumerate(itertools.product(*(range(size) for size in sizes)))


def window_max(x, axes, sizes, strides, padding):
    """`(y, offsets)`: the windowed maximum `y` of `x` over `axes` (window `sizes`,
    `strides` per axis, "valid"/"same" padding, padding positions never chosen), and for
    each output the row-major index in its window of its first maximal element (int8
    for windows up to 127 elements).

    `y` is the elementwise maximum of the window's strided slices: the same values as
    the framework's max-pool (a maximum is exact whatever the order), in ops that XLA
    fuses; its reduce-window is 3-8x slower on CPU. The offsets come with it almost free
    and make the gradient a few selects (`gathered_gradient`)."""
    geometry = {axis: _pool_geometry(x.shape[axis], size, stride, padding)
                for axis, size, stride in zip(axes, sizes, strides)}
    x = _pad_axes(x, {axis: (before, after) for axis, (_, before, after) in geometry.items()},
                  float("-inf"))
    # Output i's first window element inside the input, per axis: taken whatever its
    # value (an all -inf window's gradient goes to it, not to padding), later ones only
    # if greater.
    first_inside = {}
    for axis, stride in zip(axes, strides):
        outputs, before, _ = geometry[axis]
        shape = [1] * len(x.shape)
        shape[axis] = outputs
        first_inside[axis] = np.maximum(before - stride * np.arange(outputs), 0).reshape(shape)
    y = offsets = None
    for index, position in _window_positions(sizes):
        window = _slice_axes(x, {
            axis: (offset, offset + stride * (geometry[axis][0] - 1) + 1, stride)
            for axis, offset, stride in zip(axes, position, strides)})
        if y is None:
            y, offsets = window, ops.zeros_like(window, dtype=_offset_dtype(np.prod(sizes)))
            continue
        better = ops.greater(window, y)
        forced = functools.reduce(np.logical_and, [first_inside[axis] == offset
                                                   for axis, offset in zip(axes, position)])
        if forced.any():
            better = ops.logical_or(better, ops.convert_to_tensor(forced))
        offsets = ops.where(better, ops.cast(index, offsets.dtype), offsets)
        y = ops.maximum(y, window)  # NaN propagates as in the framework's max-pool
    return y, offsets


def gathered_gradient(upstream, offsets, axes, lengths, sizes, strides, padding):
    """Gradient with respect to `x` (of `lengths` along `axes`) of `window_max(x, axes,
    sizes, strides, padding)`, given `upstream` = dL/dy and its `offsets`, gathered: each
    window's upstream goes whole to its first maximal element, so the result is the
    framework's gradient where the maximum is unique and a valid subgradient at ties.

    Padded position p = stride * i + k (per axis) receives output i's upstream wherever
    that output's offset is k: for each window element, a slice of the padded upstream
    and offsets (-1 in the padding: no offset) and a select, summed, in one pass. At
    stride 1 the slices land on the input itself. Strided, position p has phase p %
    stride: each phase's sum is built on the outputs' grid, and the phases are then
    interleaved (stacked and reshaped). No scatter: XLA's select-and-scatter is 10-20x a
    forward on CPU, and a scattered form, each offset's part padded to its place, costs
    more passes over memory (in R50-hybrid's compiled JAX step its pools' fusions took
    202 ms against 108 gathered, 59 in one pass over both axes; the strided pools of
    R50-max's stem and stage entries, alone: 32 ms separably, 21 in one pass)."""
    geometry = {axis: _pool_geometry(length, size, stride, padding)
                for axis, length, size, stride in zip(axes, lengths, sizes, strides)}
    # Per axis: the upstream's padding, and element k's slice, starting at
    # shift - k // stride, of `span`. Stride 1: the slices land on the input itself.
    # Strided: phase r's grid q in [0, span) covers padded positions stride * q + r up to
    # the input's end, and element k (of phase k % stride) reads output q - k // stride;
    # cropped to the input after the interleave.
    widths, shifts, spans = {}, {}, {}
    for (axis, (outputs, before, _)), length, size, stride in zip(geometry.items(), lengths,
                                                                  sizes, strides):
        if stride == 1:
            widths[axis] = (max(size - 1 - before, 0), max(length + before - outputs, 0))
            shifts[axis], spans[axis] = before + widths[axis][0], length
        else:
            shifts[axis], spans[axis] = -(-size // stride) - 1, -(-(before + length) // stride)
            widths[axis] = (shifts[axis], max(spans[axis] - outputs, 0))
    up, off = _pad_axes(upstream, widths, 0), _pad_axes(offsets, widths, -1)
    zero = ops.zeros((), upstream.dtype)
    phases = {}
    for index, position in _window_positions(sizes):
        bounds = {}
        for axis, k, stride in zip(axes, position, strides):
            start = shifts[axis] - k // stride
            bounds[axis] = (start, start + spans[axis])
        part = ops.where(ops.equal(_slice_axes(off, bounds), ops.cast(index, offsets.dtype)),
                         _slice_axes(up, bounds), zero)
        phase = tuple(k % stride for k, stride in zip(position, strides))
        phases[phase] = phases[phase] + part if phase in phases else part
    reference = next(iter(phases.values()))

    def interleaved(prefix):
        # the phases under `prefix`, interleaved along the axes after it
        if len(prefix) == len(axes):
            return phases[prefix] if prefix in phases else ops.zeros_like(reference)
        axis, stride = axes[len(prefix)], strides[len(prefix)]
        parts = [interleaved(prefix + (r,)) for r in range(stride)]
        if stride == 1:
            return parts[0]
        full = ops.stack(parts, axis=axis + 1)  # (.., span, stride, ..) -> (.., span * stride, ..)
        shape = [-1] + list(full.shape[1:])  # the batch may be unknown; the rest is not
        return ops.reshape(full, shape[:axis] + [spans[axis] * stride] + shape[axis + 2:])

    crops = {axis: (before, before + length) for (axis, (_, before, _)), length, stride
             in zip(geometry.items(), lengths, strides) if stride > 1}
    full = interleaved(())
    return _slice_axes(full, crops) if crops else full


def mask_max_pool(x, pool_size, strides, padding):
    """`(y, offsets)`: `y = keras.ops.max_pool(x, pool_size, strides, padding)` for
    channels-last 4-D `x` of static height and width, and what `max_pool_gradient` needs:
    one pass over both axes (`window_max` over (1, 2)). In a whole JAX train step that
    costs half the memory passes of a row pass and a column pass (R50-hybrid's stride-1
    pools: 59 against 108 ms of a step's fusions)."""
    return window_max(x, (1, 2), pool_size, strides, padding)


def max_pool_gradient(upstream, offsets, input_size, pool_size, strides, padding):
    """dL/dx of `y, offsets = mask_max_pool(x, pool_size, strides, padding)` for `x` of
    spatial `input_size` (height, width), given `upstream` = dL/dy: to each window's
    first maximal element in row-major order, as TensorFlow's MaxPoolGrad and XLA's
    select-and-scatter choose."""
    return gathered_gradient(upstream, offsets, (1, 2), input_size, pool_size, strides, padding)


@keras.saving.register_keras_serializable(package="keras_pf")
class FastMaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` (same arguments, config and forward op: one
    `MAX_POOL_2D` in TFLite) with a gradient chosen for speed per backend.

    The framework's max-pool gradient is fast in some places and slow in others
    (measured on CPU, batch 8, 56x56x64, see README "Benchmarks"): TensorFlow with oneDNN
    (Linux x86's default) fuses `MaxPool`/`MaxPoolGrad` and its backward costs about two
    forwards, but XLA (`jit_compile=True`, and the JAX backend) lowers the gradient to
    select-and-scatter, 10-20x the forward. Where it is slow the gradient is
    `max_pool_gradient` instead: the same values where each window's maximum is unique,
    and at ties the whole gradient of a window goes to its first maximal element in
    row-major order (top-most row, then left-most), which is also TensorFlow's choice.

    `gradient` (an attribute, not part of the config): "auto" (the mask gradient under
    XLA, i.e. TensorFlow tracing for `jit_compile=True` or JAX differentiating the
    layer; the framework's elsewhere), "mask" or "framework". With the mask gradient
    the forward is `mask_max_pool` (the same values, faster under XLA on CPU, and
    the offsets of its maxima make the gradient a few selects). On JAX outside autodiff
    (predict) "auto" takes a stride-1 pool as two 1-D reduce-windows, the same maxima
    faster. On PyTorch "auto" runs PyTorch's
    max-pool on the channels-last memory itself (`keras_pf._compat.torch`): the same op
    and gradient as Keras' torch max-pool, which copies to channels-first and back and
    takes 10-15x as long; "framework" is Keras' own there. Traced without XLA, as for
    TFLite, ONNX or SavedModel export, "auto" keeps the framework's op (one
    `MAX_POOL_2D`). Channels-first data and inputs whose height or width is not known
    when the layer is traced always use the framework's gradient.
    """

    gradient = "auto"

    def _static_channels_last(self, inputs):
        """Where the own forms apply: channels-last 4-D input of known height and width."""
        return (self.data_format == "channels_last" and len(inputs.shape) == 4
                and all(d is not None for d in inputs.shape[1:3]))

    def _mask_gradient(self, inputs):
        choice = self.gradient
        if choice not in ("auto", "mask", "framework"):
            raise ValueError(f"Layer '{self.name}': gradient must be 'auto', 'mask' or "
                             f"'framework'; received {choice!r}")
        if not self._static_channels_last(inputs):
            return False
        if choice != "auto":
            return choice == "mask"
        backend = keras.backend.backend()
        if backend == "jax":  # only where a gradient is taken (see keras_pf._compat.jax)
            from keras_pf._compat.jax import is_differentiated

            return is_differentiated(inputs)
        if backend == "tensorflow":
            from keras_pf._compat.tensorflow import in_xla_context

            return in_xla_context()
        return False

    def _torch_channels_last(self, inputs):
        return (keras.backend.backend() == "torch" and self.gradient == "auto"
                and self._static_channels_last(inputs))

    def _jax_separable(self, inputs):
        """JAX outside autodiff, stride 1: two 1-D reduce-windows (a row's window, then
        over rows) instead of one 2-D one. (Strided, the 1-D pair is slower at the stem's
        shapes with a fused ReLU: 18 ms against 6.5 at 114x114x64.)"""
        return (keras.backend.backend() == "jax" and self.gradient == "auto"
                and tuple(self.strides) == (1, 1) and self._static_channels_last(inputs))

    def call(self, inputs):
        if self._torch_channels_last(inputs):
            from keras_pf._compat.torch import max_pool_channels_last

            pads = [_pool_geometry(length, size, stride, self.padding)[1:]
                    for length, size, stride in zip(inputs.shape[1:3], self.pool_size,
                                                    self.strides)]
            return max_pool_channels_last(inputs, self.pool_size, self.strides, pads)
        if not self._mask_gradient(inputs):
            if self._jax_separable(inputs):
                # the same maxima as one 2-D reduce-window, 5-8x faster in XLA on CPU
                rows = ops.max_pool(inputs, (1, self.pool_size[1]), 1, self.padding)
                return ops.max_pool(rows, (self.pool_size[0], 1), 1, self.padding)
            return super().call(inputs)
        pool_size, strides, padding = self.pool_size, self.strides, self.padding
        input_size = tuple(inputs.shape[1:3])

        @ops.custom_gradient
        def pool(x):
            y, offsets = mask_max_pool(x, pool_size, strides, padding)

            def grad(*args, upstream=None):  # TF/JAX: grad(upstream); PyTorch: keyword
                if upstream is None:
                    (upstream,) = args
                return max_pool_gradient(upstream, offsets, input_size, pool_size, strides,
                                         padding)

            return y, grad

        return pool(inputs)


# ---------------------------------------------------------------- channelwise convolution


def channelwise_conv_slices(x, kernel, strides):
    """`keras.ops.conv(x, kernel, strides, "valid")` for channels-last 4-D `x` of static
    height, width and channels C and a grouped `kernel` (kh, kw, 1, C * m): one input
    channel per group, output channel `c * m + k` from input channel c. Written as the sum
    over the window of strided slices of `x` times each (channel, multiplier)'s weight,
    so that XLA differentiates slices and products (on CPU, batch 8, at PiT-S's shapes:
    13-54 ms for the gradient, against 3.2 s for XLA's grouped convolution)."""
    kh, kw, _, filters = kernel.shape
    _, height, width, channels = x.shape
    (sh, sw), multiplier = strides, filters // channels
    rows, columns = (height - kh) // sh + 1, (width - kw) // sw + 1
    weights = ops.reshape(kernel, (kh, kw, channels, multiplier))
    total = None
    for dy, dx in itertools.product(range(kh), range(kw)):
        part = x[:, dy:dy + sh * (rows - 1) + 1:sh, dx:dx + sw * (columns - 1) + 1:sw, :]
        term = ops.expand_dims(part, -1) * weights[dy, dx]
        total = term if total is None else total + term
    return ops.reshape(total, (-1, rows, columns, filters))


@keras.saving.register_keras_serializable(package="keras_pf")
class FastGroupedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same arguments, config and weights; one `CONV_2D` in
    TFLite) whose train step is fast where the framework's grouped convolution is slow:
    PiT's pooling convolution, the original's `Conv2d(C, 2C, groups=C)`.

    XLA's grouped convolution on CPU takes 3.2 s for the gradient of one of PiT-S's two
    pooling convolutions at batch 8, and Keras' TensorFlow backend compiles every grouped
    convolution with XLA (TensorFlow's CPU kernels have none): most of PiT-S's train
    step (7.5 s, 4x ResNet50's). Where each group has one input channel, a padding
    "valid" and no dilation, the train step (`training=True`) computes it instead as

    - TensorFlow without XLA: a depthwise convolution with a depth multiplier (the same
      values within float rounding, bit for bit at PiT-S's shapes; its gradient 7-15 ms);
    - TensorFlow under XLA, and JAX where the layer is differentiated: the sum of
      strided slices times weights (`channelwise_conv_slices`; the same values within
      float rounding: the window's products are added in another order).

    Everywhere else, PyTorch (whose grouped convolution is fast), `predict` and every
    export, it is Keras' own convolution.
    """

    def _form(self, inputs, training):
        channels = inputs.shape[-1] if len(inputs.shape) == 4 else None
        if (not training or self.data_format != "channels_last" or channels is None
                or self.groups != channels or self.groups == 1 or self.padding != "valid"
                or tuple(self.dilation_rate) != (1, 1)
                or any(d is None for d in inputs.shape[1:3])):
            return "framework"
        backend = keras.backend.backend()
        if backend == "tensorflow":
            from keras_pf._compat.tensorflow import in_xla_context

            return "slices" if in_xla_context() else "depthwise"
        if backend == "jax":
            from keras_pf._compat.jax import is_differentiated

            # the kernel too: a first layer's inputs are data, but its kernel's gradient
            # is XLA's slow grouped convolution all the same
            differentiated = is_differentiated(inputs) or is_differentiated(self.kernel.value)
            return "slices" if differentiated else "framework"
        return "framework"

    def call(self, inputs, training=None):
        form = self._form(inputs, training)
        if form == "framework":
            return super().call(inputs)
        kh, kw, _, filters = self.kernel.shape
        if form == "depthwise":
            kernel = ops.reshape(self.kernel, (kh, kw, self.groups, filters // self.groups))
            x = ops.depthwise_conv(inputs, kernel, strides=self.strides, padding="valid")
        else:
            x = channelwise_conv_slices(inputs, self.kernel, tuple(self.strides))
        if self.use_bias:
            x = ops.add(x, ops.reshape(self.bias, (1, 1, 1, filters)))
        if self.activation is not None:
            x = self.activation(x)
        return x


def builtin_class(layer):
    """The Keras layer class `layer` is outside the train step: keras' MaxPooling2D and
    Conv2D for FastMaxPooling2D and FastGroupedConv2D (same config, weights and forward
    op, which is what exports, the QAT twin and the op profile see), else its own class."""
    if isinstance(layer, FastMaxPooling2D):
        return keras.layers.MaxPooling2D
    return keras.layers.Conv2D if isinstance(layer, FastGroupedConv2D) else type(layer)
