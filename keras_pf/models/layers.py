"""The layers of keras_pf that Keras does not have, and the resize they rely on.

Everything parameter-free in these networks is a built-in Keras layer (max-pool, average
pool, GELU as an `Activation`). Two custom layers: the learned position embedding of
ViT/PiT, which must resize itself when weights trained at one input size are loaded at
another, and a LayerNormalization whose exported graph the phone GPU delegate accepts;
and one activation, an exact GELU written through `erf` that every export format has.
"""

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
