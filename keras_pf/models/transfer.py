"""Using keras_pf models as backbones: multi-scale feature maps and freezing.

Feature maps (`feature_pyramid(model)`), shallow to deep; the stride is the input
size divided by the feature map's size:

| family | layers (last block of each stage)                      | strides          |
|--------|--------------------------------------------------------|------------------|
| ResNet | `conv2_block{n}_out`, `conv3_..`, `conv4_..`, `conv5_..` | 4, 8, 16, 32     |
| PiT    | `stage0_block{n}_out`, `stage1_..`, `stage2_..`        | s, 2s, 4s        |
| ViT    | `block{i}_out` at depth/4, depth/2, 3depth/4, depth      | 16, 16, 16, 16   |

PiT's patch embedding is a convolution with kernel `patch_size` and stride `s` (8 for
PiT-Ti/S, 7 for PiT-B), without padding: at 224x224 PiT-S's grids are 27, 14, 7 (one
token fewer than 224/8 on the first stage; a stride-2 pool with padding 1 follows).
ViT keeps one stride-16 token grid; its pyramid is four evenly spaced blocks'
outputs (as ViTDet/DPT take them), each `(batch, H/16, W/16, embed_dim)`.

Freezing: `set_backbone_trainable(backbone, False)` freezes everything; with
`True` it unfreezes the weights but keeps every BatchNormalization layer frozen, which
in Keras 3 also means inference mode (moving statistics are used and never updated),
as the Keras transfer-learning guide recommends. When the backbone is a nested model
inside a new one, also call it with `training=False`:

    backbone = keras_pf.PFResNet50Hybrid(include_top=False, weights="imagenet")
    keras_pf.set_backbone_trainable(backbone, False)
    inputs = keras.Input((224, 224, 3))
    x = backbone(inputs, training=False)
    ...
"""

import re

import keras

from keras_pf._compat.keras import nested_layers

_RESNET_OUT = re.compile(r"^conv(\d+)_block(\d+)_out$")
_PIT_OUT = re.compile(r"^stage(\d+)_block(\d+)_out$")
_VIT_OUT = re.compile(r"^block(\d+)_out$")


def _last_blocks(model, pattern):
    """{stage: name of its last block's output} for layers matching `pattern`."""
    last = {}
    for layer in model.layers:
        match = pattern.match(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if stage not in last or block > last[stage][0]:
                last[stage] = (block, layer.name)
    return {stage: name for stage, (_, name) in sorted(last.items())}


def feature_layers(model):
    """`[(layer_name, stride), ...]` of the feature maps `feature_pyramid` returns,
    shallow to deep. Raises ValueError for a model that is not a keras_pf network."""
    resnet = _last_blocks(model, _RESNET_OUT)
    if resnet:
        # conv2 runs at stride 4; each later stage halves the resolution.
        return [(name, 2 ** stage) for stage, name in resnet.items()]
    names = {layer.name for layer in model.layers}
    if "patch_embed" not in names:
        raise ValueError(
            f"Model {model.name!r} is not a keras_pf ResNet, ViT or PiT (no "
            "'conv*_block*_out' or 'patch_embed' layer); build it with a keras_pf "
            "constructor (any `include_top`)."
        )
    patch_stride = model.get_layer("patch_embed").strides[0]
    pit = _last_blocks(model, _PIT_OUT)
    if pit:
        return [(name, patch_stride * 2 ** stage) for stage, name in pit.items()]
    blocks = sorted(int(_VIT_OUT.match(n).group(1)) for n in names if _VIT_OUT.match(n))
    depth = len(blocks)
    picks = sorted({blocks[max(0, depth * k // 4 - 1)] for k in (1, 2, 3, 4)})
    return [(f"block{i}_out", patch_stride) for i in picks]


def feature_pyramid(model, name=None):
    """A `keras.Model` on `model`'s input whose outputs are its multi-scale feature
    maps (list, shallow to deep; see the module docstring for layers and strides).

    Shares `model`'s layers and weights, so build `model` with the weights you want,
    e.g. `feature_pyramid(keras_pf.PFResNet50Hybrid(include_top=False,
    weights="imagenet", input_shape=(512, 512, 3)))`. For detection and segmentation
    heads: ResNet gives strides 4/8/16/32, PiT 8/16/32 (7/14/28 for PiT-B), ViT four
    stride-16 grids.
    """
    outputs = [model.get_layer(layer_name).output for layer_name, _ in feature_layers(model)]
    return keras.Model(model.inputs, outputs, name=name or f"{model.name}_features")


def set_backbone_trainable(model, trainable, freeze_batchnorm=True):
    """Freeze (`trainable=False`) or unfreeze a backbone, keeping BatchNorm frozen.

    With `freeze_batchnorm=True` (the default) every BatchNormalization layer stays
    non-trainable even when the rest is unfrozen; in Keras 3 a non-trainable
    BatchNormalization runs in inference mode, so its moving mean/variance, learned on
    ImageNet, are not overwritten by small fine-tuning batches. Returns `model`.
    """
    model.trainable = trainable
    if trainable and freeze_batchnorm:
        for layer in nested_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def freeze_backbone(model):
    """`set_backbone_trainable(model, False)`: no weight or BatchNorm statistic of
    `model` changes in `fit` (the Keras transfer-learning guide's first phase)."""
    return set_backbone_trainable(model, False)

