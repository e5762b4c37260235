"""ViT with every second self-attention replaced by a max-pool token mixer (ViT-max).

Tokens stay a 4D `(batch, grid_h, grid_w, channels)` grid throughout: the parameter-free
mixer pools that grid directly, LayerNorm and Dense act on the last axis, and only the
attention flattens it to a sequence. There is no class token; the head averages tokens.
"""

from keras import layers

from keras_pf.models import application
from keras_pf.models.layers import BroadcastSafeLayerNormalization, PositionEmbedding, gelu

LN_EPSILON = 1e-6


def attention(x, num_heads, name):
    """Multi-head self-attention over all tokens of the grid."""
    _, h, w, c = x.shape
    x = layers.Reshape((h * w, c), name=name + "_tokens")(x)
    x = layers.MultiHeadAttention(num_heads, key_dim=c // num_heads, name=name + "_attn")(x, x)
    return layers.Reshape((h, w, c), name=name + "_grid")(x)


def max_pool_mixer(x, name):
    """The parameter-free token mixer ("EffLayer"): expand 3x, GELU, 3x3 max-pool over
    the token grid, GELU, project back. The stride-1 "same" pool ignores padding, which
    is exact for a GELU output that can be negative (PyTorch pads with -inf)."""
    c = x.shape[-1]
    x = layers.Dense(3 * c, name=name + "_mixer_expand")(x)
    x = layers.Activation(gelu, name=name + "_mixer_gelu1")(x)
    x = layers.MaxPooling2D(3, strides=1, padding="same", name=name + "_mixer_pool")(x)
    x = layers.Activation(gelu, name=name + "_mixer_gelu2")(x)
    return layers.Dense(c, name=name + "_mixer_proj")(x)


def transformer_block(x, num_heads, mlp_ratio, use_attention, name):
    """Pre-norm block: `x + mixer(norm1(x))`, then `x + mlp(norm2(x))`."""
    c = x.shape[-1]
    y = BroadcastSafeLayerNormalization(epsilon=LN_EPSILON, name=name + "_norm1")(x)
    y = attention(y, num_heads, name) if use_attention else max_pool_mixer(y, name)
    x = layers.Add(name=name + "_add1")([x, y])
    y = BroadcastSafeLayerNormalization(epsilon=LN_EPSILON, name=name + "_norm2")(x)
    y = layers.Dense(int(c * mlp_ratio), name=name + "_mlp_fc1")(y)
    y = layers.Activation(gelu, name=name + "_mlp_gelu")(y)
    y = layers.Dense(c, name=name + "_mlp_fc2")(y)
    return layers.Add(name=name + "_out")([x, y])


def PFViT(
    embed_dim=384,
    depth=12,
    num_heads=6,
    patch_size=16,
    mlp_ratio=4.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="pf_vit",
    weights_id=None,
):
    """Generic builder of the ViT-max family.

    Blocks alternate: even-numbered ones use self-attention, odd-numbered ones the
    max-pool token mixer. With `include_top=False` and `pooling=None` the output is
    the final-normalized token grid `(batch, H/patch, W/patch, embed_dim)`.
    """
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    application.validate_arguments(weights, include_top, classes, pooling)
    img_input = application.image_input(input_tensor, input_shape, weights, include_top,
                                        fixed_size=True,
                                        min_size=patch_size)
    x = layers.Conv2D(embed_dim, patch_size, strides=patch_size, name="patch_embed")(img_input)
    x = PositionEmbedding(name="pos_embed")(x)
    for i in range(depth):
        x = transformer_block(x, num_heads, mlp_ratio, i % 2 == 0, f"block{i}")
    x = BroadcastSafeLayerNormalization(epsilon=LN_EPSILON, name="norm")(x)
    x = application.head(x, include_top, pooling, classes, classifier_activation, weights)
    return application.finish(img_input, input_tensor, x, name, weights, weights_id)


def _named(embed_dim, num_heads, weights_id, title, description, default_weights=None):
    return application.named_constructor(
        PFViT, dict(embed_dim=embed_dim, num_heads=num_heads), weights_id, title, description,
        input_note="Default (224, 224, 3); other sizes resize the position embedding "
        "(PyTorch bicubic) when weights are loaded.",
        default_weights=default_weights,
    )


PFViTTiny = _named(192, 3, "pf_vit_tiny", "PFViTTiny",
                   "ViT-Ti-max: width 192, 3 heads, 12 blocks, every second attention "
                   "replaced by a max-pool token mixer (6.2 M parameters). No published "
                   "checkpoint, hence `weights=None` by default.")
PFViTSmall = _named(384, 6, "pf_vit_small", "PFViTSmall",
                    "ViT-S-max: width 384, 6 heads, 12 blocks, every second attention "
                    "replaced by a max-pool token mixer (23.8 M parameters).",
                    default_weights="imagenet")
PFViTBase = _named(768, 12, "pf_vit_base", "PFViTBase",
                   "ViT-B-max: width 768, 12 heads, 12 blocks, every second attention "
                   "replaced by a max-pool token mixer (93.6 M parameters). No published "
                   "checkpoint, hence `weights=None` by default.")
