"""PiT (pooling-based ViT) with every second self-attention of each stage replaced by a
max-pool token mixer (PiT-max). Same blocks as `pf_vit`; between stages a stride-2
3x3 convolution with two filters per input channel (groups = channels) halves the grid
and doubles the width.
"""

from keras import layers

from keras_pf.models import application
from keras_pf.models.layers import (BroadcastSafeLayerNormalization, FastGroupedConv2D,
                                    PositionEmbedding)
from keras_pf.models.pf_vit import LN_EPSILON, transformer_block


def PFPiT(
    base_dims=(48, 48, 48),
    depths=(2, 6, 4),
    heads=(3, 6, 12),
    patch_size=16,
    stride=8,
    mlp_ratio=4.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="pf_pit",
    weights_id=None,
):
    """Generic builder of the PiT-max family.

    Stage `s` has width `base_dims[s] * heads[s]`; in each stage blocks alternate
    attention (even) and the max-pool token mixer (odd). With `include_top=False` and
    `pooling=None` the output is the final-normalized token grid of the last stage.
    """
    if not len(base_dims) == len(depths) == len(heads):
        raise ValueError(
            f"base_dims, depths and heads need one entry per stage; received "
            f"{base_dims}, {depths}, {heads}"
        )
    dims = [b * h for b, h in zip(base_dims, heads)]
    for prev, nxt in zip(dims, dims[1:]):
        if nxt != 2 * prev:  # the pooling conv has two filters per input channel
            raise ValueError(f"each stage must be twice as wide as the one before; widths {dims}")
    application.validate_arguments(weights, include_top, classes, pooling)
    img_input = application.image_input(input_tensor, input_shape, weights, include_top,
                                        fixed_size=True,
                                        min_size=patch_size)
    x = layers.Conv2D(dims[0], patch_size, strides=stride, name="patch_embed")(img_input)
    x = PositionEmbedding(name="pos_embed")(x)
    for s, (depth, num_heads) in enumerate(zip(depths, heads)):
        if s > 0:
            x = layers.ZeroPadding2D(1, name=f"stage{s - 1}_pool_pad")(x)
            # The original's Conv2d(C, 2C, groups=C), as a grouped Conv2D: TFLite's
            # CONV_2D with 1-channel filter groups runs on XNNPACK and is accepted by the
            # GPU delegate, whose DEPTHWISE_CONV_2D takes depth multiplier 1 only. (Tiling
            # the channels for a multiplier-1 depthwise conv adds a 5-D TILE that XNNPACK
            # does not run.) Same weights and MACs as the depthwise form. The GPU delegate
            # runs groups of 1 input channel as one convolution per group. Fast*: the
            # train step's gradient takes another form where XLA's is slow.
            x = FastGroupedConv2D(2 * x.shape[-1], 3, strides=2, groups=x.shape[-1],
                                  name=f"stage{s - 1}_pool")(x)
        for i in range(depth):
            x = transformer_block(x, num_heads, mlp_ratio, i % 2 == 0, f"stage{s}_block{i}")
    x = BroadcastSafeLayerNormalization(epsilon=LN_EPSILON, name="norm")(x)
    x = application.head(x, include_top, pooling, classes, classifier_activation, weights)
    return application.finish(img_input, input_tensor, x, name, weights, weights_id)


def _named(config, weights_id, title, description, default_weights=None):
    return application.named_constructor(
        PFPiT, config, weights_id, title, description,
        input_note="Default (224, 224, 3); other sizes resize the position embedding "
        "(PyTorch bicubic, as the original does) when weights are loaded.",
        default_weights=default_weights,
    )


PFPiTTiny = _named(
    dict(base_dims=(32, 32, 32), depths=(2, 6, 4), heads=(2, 4, 8), patch_size=16, stride=8),
    "pf_pit_tiny", "PFPiTTiny",
    "PiT-Ti-max (5.2 M parameters). No published checkpoint, hence `weights=None` by default.",
)
PFPiTSmall = _named(
    dict(base_dims=(48, 48, 48), depths=(2, 6, 4), heads=(3, 6, 12), patch_size=16, stride=8),
    "pf_pit_small", "PFPiTSmall",
    "PiT-S-max (25.1 M parameters).",
    default_weights="imagenet",
)
PFPiTBase = _named(
    dict(base_dims=(64, 64, 64), depths=(3, 6, 4), heads=(4, 8, 16), patch_size=14, stride=7),
    "pf_pit_base", "PFPiTBase",
    "PiT-B-max (79.0 M parameters). No published checkpoint, hence `weights=None` by default.",
)
