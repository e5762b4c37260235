"""ResNet50 with parameter-free spatial operations: R50, R50-max, R50-hybrid.

Layer names follow `keras.applications.ResNet50` ("conv2_block1_1_conv", ...,
"conv5_block3_out"), so code written for that model finds the same stage outputs here.
Every stride-2 convolution and pool pads explicitly and symmetrically, as PyTorch does.
"""

from keras import layers

from keras_pf.models import application

BN_EPSILON = 1e-5  # PyTorch's default; Keras' is 1e-3
BLOCK_KINDS = ("plain", "max", "hybrid")


def _conv_bn(x, filters, kernel_size, strides, name, relu=True):
    """Conv (no bias) -> BatchNorm [-> ReLU], PyTorch padding `kernel_size // 2`."""
    pad = kernel_size // 2
    if strides > 1 and pad:
        x = layers.ZeroPadding2D(pad, name=name + "_pad")(x)
        padding = "valid"
    else:  # stride 1, odd kernel: Keras "same" is symmetric, as PyTorch
        padding = "same"
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                      use_bias=False, name=name + "_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name + "_bn")(x)
    if relu:
        x = layers.ReLU(name=name + "_relu")(x)
    return x


def _max_pool(x, strides, name):
    """3x3 max-pool, PyTorch padding 1. Stride 2 pads with zeros, which equals PyTorch's
    -inf padding only because the input comes out of a ReLU (never negative)."""
    if strides == 1:
        return layers.MaxPooling2D(3, strides=1, padding="same", name=name + "_pool")(x)
    x = layers.ZeroPadding2D(1, name=name + "_pad")(x)
    return layers.MaxPooling2D(3, strides=strides, name=name + "_pool")(x)


def bottleneck(x, width, strides, kind, name):
    """One bottleneck: 1x1 reduce, the spatial operation of `kind`, 1x1 expand."""
    filters = width * 4
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, name + "_0", relu=False)
    else:
        shortcut = x
    x = _conv_bn(x, width, 1, 1, name + "_1")
    if kind == "plain":
        x = _conv_bn(x, width, 3, strides, name + "_2")
    elif kind == "max" or strides == 1:  # R50-max everywhere; R50-hybrid at stride 1
        x = _max_pool(x, strides, name + "_2")
    else:  # R50-hybrid at stride 2: 2x2 average pool, then a stride-1 3x3 conv
        x = layers.AveragePooling2D(2, strides=2, name=name + "_2_avgpool")(x)
        x = _conv_bn(x, width, 3, 1, name + "_2")
    x = _conv_bn(x, filters, 1, 1, name + "_3", relu=False)
    x = layers.Add(name=name + "_add")([shortcut, x])
    return layers.ReLU(name=name + "_out")(x)


def _check_hybrid_input(shape, kinds):
    # A hybrid stride-2 block average-pools (floor) beside a stride-2 1x1 shortcut
    # (ceil): they disagree on odd sides, so the original fails there too.
    if "hybrid" not in kinds:
        return
    for side in shape[1:3]:
        if side is not None and side % 32:
            raise ValueError(
                f"R50-hybrid needs input height and width that are multiples of 32 "
                f"(its stride-2 blocks average-pool 2x2); received input shape "
                f"{tuple(shape[1:])}. Resize or crop to e.g. 224x224."
            )


def PFResNet(
    block="hybrid",
    depths=(3, 4, 6, 3),
    width_mult=1.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="pf_resnet",
    weights_id=None,
):
    """Generic builder of the ResNet family.

    Args:
        block: the bottleneck kind, `"plain"` (3x3 conv), `"max"` (3x3 max-pool) or
            `"hybrid"` (max-pool at stride 1, average pool + 3x3 conv at stride 2);
            or a sequence of one kind per stage.
        depths: bottlenecks per stage.
        width_mult: multiplier of the inner widths 64/128/256/512 (the stem stays 64).
        weights_id: the registry name of this architecture, used to resolve weight
            tags such as "imagenet"; the named constructors set it.
        Other arguments: as in `keras.applications.ResNet50`.
    """
    kinds = [block] * len(depths) if isinstance(block, str) else list(block)
    if len(kinds) != len(depths) or any(k not in BLOCK_KINDS for k in kinds):
        raise ValueError(
            f"`block` must be one of {BLOCK_KINDS} or one per stage ({len(depths)} "
            f"stages); received block={block!r}"
        )
    application.validate_arguments(weights, include_top, classes, pooling)
    img_input = application.image_input(input_tensor, input_shape, weights, include_top,
                                        fixed_size=False)
    _check_hybrid_input(img_input.shape, kinds)

    x = _conv_bn(img_input, 64, 7, 2, "conv1")
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (depth, kind) in enumerate(zip(depths, kinds)):
        width = int(64 * 2**stage * width_mult)
        for i in range(depth):
            strides = 2 if stage > 0 and i == 0 else 1
            x = bottleneck(x, width, strides, kind, f"conv{stage + 2}_block{i + 1}")

    x = application.head(x, include_top, pooling, classes, classifier_activation, weights)
    return application.finish(img_input, input_tensor, x, name, weights, weights_id)


def _named(block, weights_id, title, description, default_weights="imagenet"):
    return application.named_constructor(
        PFResNet, dict(block=block), weights_id, title, description,
        input_note="Default (224, 224, 3) with `include_top=True`, any size otherwise"
        + (" whose sides are multiples of 32." if block == "hybrid" else "."),
        default_weights=default_weights,
    )


PFResNet50Hybrid = _named(
    "hybrid", "pf_resnet50_hybrid", "PFResNet50Hybrid",
    "R50-hybrid: 3x3 max-pools in every stride-1 bottleneck, a 2x2 average pool and a "
    "3x3 conv in the three stride-2 ones (17.3 M parameters, 2.6 GFLOPs, 77.1% top-1).",
)
PFResNet50Max = _named(
    "max", "pf_resnet50_max", "PFResNet50Max",
    "R50-max: every bottleneck's 3x3 conv replaced by a 3x3 max-pool (14.2 M "
    "parameters, 2.2 GFLOPs, 74.3% top-1).",
)
PFResNet50Plain = _named(
    "plain", "pf_resnet50_plain", "PFResNet50Plain",
    "The baseline ResNet50 (v1.5) of the paper's code, as a reference for the "
    "parameter-free variants (25.6 M parameters, 4.1 GFLOPs). The paper published no "
    "checkpoint for it, hence `weights=None` by default.",
    default_weights=None,
)
PFResNet50 = _named(
    "hybrid", "pf_resnet50_hybrid", "PFResNet50",
    "The paper's recommended parameter-free ResNet50: R50-hybrid (the same network and "
    "weights as `PFResNet50Hybrid`).",
)
