"""Map the original PyTorch state dicts onto keras_pf models.

Every original tensor goes to exactly one Keras variable, transposed to Keras' layout
and shape-checked; every Keras variable must be set. Anything else raises
`WeightMappingError` naming the key, both shapes and the model. The family (ResNet,
ViT, PiT) is recognized from the state dict's own keys. `save_converted` writes the
converted weights file (for `keras-pf convert`, the download cache and the tools).
"""

import collections
import os
import re

import numpy as np

from keras_pf.files import atomic_output
from keras_pf.weights.torch_reader import CheckpointError, load_state_dict


class WeightMappingError(ValueError):
    pass


# --- layout transforms: PyTorch array -> Keras array -------------------------------

def _conv(w):  # (out, in, kh, kw) -> (kh, kw, in, out)
    return w.transpose(2, 3, 1, 0)


def _dense(w):  # (out, in) -> (in, out)
    return w.T


_BN_SLOTS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}
_LN_SLOTS = {"weight": "gamma", "bias": "beta"}


# --- key -> Keras layer name, per family ---------------------------------------------

def _resnet_layer(key):
    """`layer2.0.reduction_block.1.weight` -> ("conv3_block1_1_bn", "bn", "weight")."""
    if key.startswith("fc."):
        return "predictions", "dense", key[3:]
    m = re.fullmatch(r"conv1\.([01])\.(\w+)", key)
    if m:
        return "conv1_" + ("conv" if m[1] == "0" else "bn"), ("conv", "bn")[int(m[1])], m[2]
    m = re.fullmatch(
        r"layer(\d)\.(\d+)\.(reduction_block|conv_block|conv_block\.1|expansion_block|downsample)"
        r"\.([01])\.(\w+)", key)
    if not m:
        return None
    part = {"reduction_block": "1", "conv_block": "2", "conv_block.1": "2",
            "expansion_block": "3", "downsample": "0"}[m[3]]
    kind = ("conv", "bn")[int(m[4])]
    return f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_{part}_{kind}", kind, m[5]


def _transformer_layer(key):
    """ViT (`blocks.3.mlp.fc1.bias`) and PiT (`transformers.1.blocks.0.attn.qkv.weight`,
    `pools.0.conv.weight`) keys -> (Keras layer name or block prefix, kind, slot)."""
    simple = {"patch_embed.proj": ("patch_embed", "conv"), "patch_embed.conv": ("patch_embed", "conv"),
              "norm": ("norm", "ln"), "head": ("predictions", "dense")}
    if key == "pos_embed":
        return "pos_embed", "pos_embed", "weight"
    prefix, _, slot = key.rpartition(".")
    if prefix in simple:
        return (*simple[prefix], slot)
    m = re.fullmatch(r"pools\.(\d+)\.conv", prefix)
    if m:
        # Conv2d(C, 2C, groups=C): a grouped Keras Conv2D of the same (out, in/groups,
        # kh, kw) weight, so the plain convolution layout applies
        return f"stage{m[1]}_pool", "conv", slot
    m = re.fullmatch(r"(?:transformers\.(\d+)\.)?blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)",
                     prefix)
    if not m:
        return None
    block = (f"stage{m[1]}_" if m[1] is not None else "") + f"block{m[2]}"
    part = m[3]
    if part in ("norm1", "norm2"):
        return f"{block}_{part}", "ln", slot
    if part.startswith("mlp"):
        return f"{block}_mlp_{part[4:]}", "dense", slot
    # attn.qkv / attn.proj: real attention in even blocks, the max-pool mixer's
    # expansion / projection (same names in the checkpoint) in odd ones.
    return block, part, slot


def _family(state_dict):
    if "conv1.0.weight" in state_dict:
        return "resnet"
    if "patch_embed.proj.weight" in state_dict or "patch_embed.conv.weight" in state_dict:
        return "transformer"
    raise WeightMappingError(
        "Unrecognized checkpoint: none of `conv1.0.weight` (ResNet), "
        "`patch_embed.proj.weight` (ViT) or `patch_embed.conv.weight` (PiT) is in it; "
        f"first keys: {list(state_dict)[:5]}"
    )


def _get_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def torch_to_keras(model, state_dict, source="checkpoint"):
    """Return `{keras variable path: array}` for every variable of `model`."""
    family = _family(state_dict)
    parse = _resnet_layer if family == "resnet" else _transformer_layer
    assigned = {}  # variable path -> (array, original key)
    skipped_head = []

    def put(variable, array, key):
        array = _as_float(array, variable.dtype, key, source)
        if tuple(variable.shape) != array.shape:
            raise WeightMappingError(
                f"Model '{model.name}': {source} key `{key}` has shape "
                f"{tuple(state_dict[key].shape)} (Keras layout {array.shape}), but the Keras "
                f"weight `{variable.path}` has shape {tuple(variable.shape)}. The checkpoint "
                "was made for another configuration (width, depth, classes, block kind)."
            )
        if variable.path in assigned:
            raise WeightMappingError(
                f"Model '{model.name}': `{key}` and `{assigned[variable.path][1]}` both map "
                f"to `{variable.path}`."
            )
        assigned[variable.path] = (array, key)

    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        parsed = parse(key)
        if parsed is None:
            raise WeightMappingError(
                f"Model '{model.name}': {source} has key `{key}` (shape {tuple(value.shape)}) "
                "that no Keras weight corresponds to: is it a checkpoint of another "
                "architecture?"
            )
        name, kind, slot = parsed
        if name == "predictions" and _get_layer(model, name) is None:
            skipped_head.append(key)  # include_top=False: the classifier is not loaded
            continue
        if kind in ("attn.qkv", "attn.proj"):
            attn = _get_layer(model, name + "_attn")
            if attn is not None:
                _put_attention(attn, kind, slot, value, key, put)
                continue
            name, kind = name + ("_mixer_expand" if kind == "attn.qkv" else "_mixer_proj"), "dense"
        layer = _get_layer(model, name)
        if layer is None:
            raise WeightMappingError(
                f"Model '{model.name}': {source} key `{key}` (shape {tuple(value.shape)}) "
                f"belongs to layer `{name}`, which this model does not have: the checkpoint "
                "was made for another configuration (depth, block kind or family)."
            )
        if kind == "conv":
            put(layer.kernel if slot == "weight" else layer.bias,
                _conv(value) if slot == "weight" else value, key)
        elif kind == "bn":
            put(getattr(layer, _BN_SLOTS[slot]), value, key)
        elif kind == "ln":
            put(getattr(layer, _LN_SLOTS[slot]), value, key)
        elif kind == "dense":
            put(layer.kernel if slot == "weight" else layer.bias,
                _dense(value) if slot == "weight" else value, key)
        elif kind == "pos_embed":
            grid = _as_float(value, np.float32, key, source)
            put(layer.embedding, _pos_embed_grid(grid, layer.embedding.shape, key, model), key)

    missing = [v.path for v in model.weights if v.path not in assigned]
    if missing:
        raise WeightMappingError(
            f"Model '{model.name}': {source} has no tensor for the Keras weights "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)} in all): the "
            "checkpoint was made for a smaller or different configuration."
        )
    return {path: array for path, (array, _) in assigned.items()}


def _as_float(array, dtype, key, source):
    """A checkpoint tensor in the variable's float dtype (float16 / bfloat16 / float64
    files load too); integers where floats are needed, NaN and inf are errors."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise CheckpointError(
            f"{source}: `{key}` holds {array.dtype} values where the model needs floats; "
            "the file is not a weights checkpoint of this model (or was tampered with)."
        )
    if not np.isfinite(array).all():
        raise CheckpointError(
            f"{source}: `{key}` contains NaN or infinite values; the checkpoint is broken "
            "(a diverged training run, or a corrupt file)."
        )
    return array.astype(dtype, copy=False)


def _put_attention(attn, kind, slot, value, key, put):
    """Split the fused `qkv` Linear (output laid out as (3, heads, head_dim)) into
    Keras MultiHeadAttention's query/key/value EinsumDense weights."""
    if kind == "attn.qkv":
        heads, head_dim = attn.query_dense.kernel.shape[1:]
        if value.shape[0] != 3 * heads * head_dim:
            raise WeightMappingError(
                f"`{key}` has shape {tuple(value.shape)}, but `{attn.path}` expects "
                f"{3 * heads * head_dim} fused q/k/v outputs ({heads} heads of {head_dim})."
            )
        parts = value.reshape(3, heads, head_dim, *value.shape[1:])
        for dense, part in zip((attn.query_dense, attn.key_dense, attn.value_dense), parts):
            if slot == "weight":  # (heads, head_dim, in) -> (in, heads, head_dim)
                put(dense.kernel, part.transpose(2, 0, 1), key)
            else:
                put(dense.bias, part, key)
    else:  # proj: Linear(C, C) whose input is laid out (heads, head_dim)
        heads, head_dim = attn.output_dense.kernel.shape[:2]
        if slot == "weight":  # (out, heads*head_dim) -> (heads, head_dim, out)
            put(attn.output_dense.kernel, value.T.reshape(heads, head_dim, -1), key)
        else:
            put(attn.output_dense.bias, value, key)


def _pos_embed_grid(value, target_shape, key, model):
    """The original position embedding as a `(1, H, W, C)` grid resized to the model's."""
    if value.ndim == 3:  # ViT: (1, N, C), tokens in row-major order of a square grid
        n = value.shape[1]
        side = int(round(n ** 0.5))
        if side * side != n:
            raise WeightMappingError(f"`{key}` has {n} tokens, which is not a square grid")
        grid = value.reshape(1, side, side, value.shape[2])
    elif value.ndim == 4:  # PiT: (1, C, H, W)
        grid = value.transpose(0, 2, 3, 1)
    else:
        raise WeightMappingError(f"`{key}` has unexpected shape {tuple(value.shape)}")
    if grid.shape[3] != target_shape[3]:
        raise WeightMappingError(
            f"Model '{model.name}': `{key}` has {grid.shape[3]} channels, the model's "
            f"position embedding {target_shape[3]}."
        )
    from keras_pf.models.layers import resize_grid

    return resize_grid(grid.astype(np.float32), tuple(target_shape[1:3]))


def load_torch_weights(model, checkpoint):
    """Load an original checkpoint (a `.pth` path, or a state dict already read) into
    `model`. Raises `WeightMappingError` on any unknown, missing or mis-shaped tensor,
    before any weight of the model is changed."""
    if isinstance(checkpoint, dict):
        state_dict, source = checkpoint, "state dict"
    else:
        state_dict = load_state_dict(checkpoint, max_elements=_element_budget(model))
        source = str(checkpoint)
    values = torch_to_keras(model, state_dict, source=source)
    for variable in model.weights:
        variable.assign(values[variable.path])
    return model


def _element_budget(model):
    """What a checkpoint for `model` may declare: the model's own weights plus room for
    BatchNorm counters and a position embedding trained at a larger grid."""
    return sum(int(np.prod(v.shape)) for v in model.weights) + 2 ** 22


def save_converted(model, checkpoint, output):
    """Load the original `checkpoint` into the built `model`, write `output` atomically."""
    load_torch_weights(model, checkpoint)
    _renumber_auto_names(model)
    with atomic_output(output) as tmp:
        model.save_weights(tmp, overwrite=True)
    return model


def _renumber_auto_names(model):
    """Keras writes every layer's name into the weights file, and unnamed layers (the
    input, MultiHeadAttention's inner softmax and dropout) are numbered per process
    (`softmax_7`). Numbering them as a fresh process would keeps the converted file's
    bytes, hence its sha256, reproducible: converting the same original anywhere gives
    the published file. Only names change; no weight is touched."""
    seen = collections.Counter()
    from keras_pf._compat.keras import all_layers

    for layer in all_layers(model):
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()
        if re.fullmatch(re.escape(base) + r"(_\d+)?", layer.name):
            layer.name = base if not seen[base] else f"{base}_{seen[base]}"
            seen[base] += 1


def convert_checkpoint(model_name, checkpoint, output, input_size=224, model_args=None):
    """Build `model_name` (a named constructor, or a generic builder with `model_args`),
    load the original `checkpoint`, write `output` atomically; returns the model."""
    from keras_pf.models import resolve

    resolve.check_name(model_name, generic=True)
    resolve.check_model_args(model_name, model_args)
    if not str(output).endswith(".weights.h5"):
        raise ValueError(f"the output file name must end in .weights.h5 (Keras' rule); got {output}")
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    model = resolve.build(model_name, model_args, weights=None, input_shape=(input_size, input_size, 3))
    return save_converted(model, checkpoint, output)
