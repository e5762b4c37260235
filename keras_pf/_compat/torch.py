"""PyTorch specifics (written for PyTorch 2.13 and Keras 3.15's torch backend): a
channels-last max-pool that runs PyTorch's own channels-last kernel.

Keras' torch `max_pool` transposes channels-last inputs to a channels-first copy, runs
PyTorch's channels-first kernel and transposes back: 10-15x the time of the same
`torch.nn.functional.max_pool2d` on the input's channels-last memory (measured at
R50-max's shapes, batch 8, 2 cores). Same op, same values and PyTorch's own gradient
(`max_pool2d_with_indices_backward`: at ties the first maximal element in row-major
order, as TensorFlow's)."""

TORCH_VERSION = "2.13"


def max_pool_channels_last(x, pool_size, strides, pads):
    """`keras.ops.max_pool(x, pool_size, strides, padding)` for a channels-last 4-D torch
    tensor `x`; `pads`: ((top, bottom), (left, right)), the padding that `padding` means
    (never chosen: -inf)."""
    import torch.nn.functional as F

    (top, bottom), (left, right) = pads
    if top == bottom and left == right and 2 * top <= pool_size[0] and 2 * left <= pool_size[1]:
        padding = (top, left)  # PyTorch pads symmetrically itself
    else:
        x = F.pad(x, (0, 0, left, right, top, bottom), value=float("-inf"))
        padding = (0, 0)
    # (N, H, W, C) memory viewed as (N, C, H, W): PyTorch's channels_last format
    y = F.max_pool2d(x.permute(0, 3, 1, 2), pool_size, strides, padding)
    return y.permute(0, 2, 3, 1)
