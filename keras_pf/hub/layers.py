"""Parameter-free layers that lay a keras_pf network's feature maps on the strides a
keras-hub feature pyramid expects (`P{n}` = input size / 2**n)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_pf")
class HalfCellResample(keras.layers.Layer):
    """Resample a `(B, H, W, C)` grid at positions shifted by half a cell, then crop to
    `output_size`: output `j` interpolates input `j - 0.5` (the mean of inputs `j - 1`
    and `j`, the border repeated), on both axes.

    PiT's first stage is one token short of the stride-8 grid (its patch embedding is an
    unpadded 16x16 convolution with stride 8: 27 tokens at 224, centred on pixels
    8i + 8); the stride-8 grid that halves into PiT's second stage has its cells centred
    on pixels 8j + 4, i.e. at token j - 0.5. This is that grid, exactly (linear
    interpolation at the true cell centres), without weights, in TFLite builtin ops
    (concatenation, slices, an add and a multiply).
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = tuple(int(v) for v in output_size)

    def call(self, x):
        height, width = self.output_size
        x = ops.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
        x = (x[:, :-1] + x[:, 1:]) * 0.5
        x = x[:, :height]
        x = ops.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)
        x = (x[:, :, :-1] + x[:, :, 1:]) * 0.5
        return x[:, :, :width]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}
