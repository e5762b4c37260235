"""What every keras_pf model shares with `keras.applications`: argument checks, the
input, the head, and loading weights. The family builders (`pf_resnet`, `pf_vit`,
`pf_pit`) call these so that the conventions live in one place."""

import os

import keras
from keras import layers

DEFAULT_SIZE = 224

BASE_DOCSTRING = """Instantiates the {title} of "Learning Features with Parameter-Free
Layers" (Han et al., ICLR 2022).

{description}

Reference:
- [Learning Features with Parameter-Free Layers](https://arxiv.org/abs/2202.02777)
  (ICLR 2022)

The model expects inputs preprocessed with `keras_pf.preprocess_input`: RGB pixels
in [0, 255], scaled to [0, 1] and normalized with the ImageNet mean and std, as the
original training did.

Args:
    include_top: whether to include the classification head (global average pool
        and a fully-connected layer named "predictions").
    weights: `None` (random initialization), `"imagenet"` or another tag of the
        weights registry (`keras-pf weights list`), the path of a Keras weights
        file (`.weights.h5`), or the path of an original PyTorch checkpoint
        (`.pth`), converted on the fly.
    input_tensor: optional Keras tensor (output of `keras.Input()`) to use as the
        image input.
    input_shape: optional `(height, width, 3)` tuple. {input_note}
    pooling: feature pooling when `include_top=False`: `None` returns the 4D
        feature map of the last stage, `"avg"` global average pooling, `"max"`
        global max pooling.
    classes: number of classes, only with `include_top=True` and when no
        ImageNet weights are loaded (or with `weights=None`).
    classifier_activation: activation of the "predictions" layer; `None` returns
        logits. With pretrained weights only `None` or `"softmax"` are allowed.
    name: the model's name. Weights are looked up by the model's own weights
        tag, never by this name.

Returns:
    A `keras.Model` instance.
"""


def _is_weights_tag(weights):
    from keras_pf.weights.keras_file import WEIGHTS_FILE_SUFFIXES

    return isinstance(weights, str) and os.path.sep not in weights and not weights.endswith(
        WEIGHTS_FILE_SUFFIXES)


def validate_arguments(weights, include_top, classes, pooling):
    """The checks `keras.applications` makes, with the same messages."""
    if isinstance(weights, (str, os.PathLike)) and not _is_weights_tag(os.fspath(weights)) \
            and not os.path.exists(weights):
        raise ValueError(
            f"weights file not found: {os.fspath(weights)} (`weights` is None, a registry tag "
            "such as 'imagenet', or the path of a .weights.h5, .keras or original .pth file)"
        )
    if not (weights is None or _is_weights_tag(weights) or os.path.exists(str(weights))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            "'imagenet' (pre-training on ImageNet) or another registry tag "
            "(`keras-pf weights list`), or the path to a weights file to be loaded "
            "(.weights.h5, or an original .pth checkpoint). "
            f"Received: weights={weights}"
        )
    if _is_weights_tag(weights) and include_top and classes != 1000:
        raise ValueError(
            f"If using `weights='{weights}'` with `include_top=True`, `classes` should "
            f"be 1000.  Received classes={classes}"
        )
    if not include_top and pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` should be None, 'avg' or 'max'. Received: pooling={pooling}"
        )
    if keras.backend.image_data_format() != "channels_last":
        raise ValueError(
            "keras_pf models are built channels_last; set "
            "`keras.backend.set_image_data_format('channels_last')`."
        )


def image_input(input_tensor, input_shape, weights, include_top, fixed_size, min_size=32):
    """The model's input layer, as `keras.applications` makes it.

    A missing `input_shape` means 224x224 with `include_top=True` or with `fixed_size`
    (ViT/PiT: the position embedding needs a known grid); otherwise (ResNet backbones)
    height and width stay `None`, as in `keras.applications.ResNet50(include_top=False)`.
    """
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        fixed = fixed_size or include_top
        input_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3) if fixed else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be a tuple of three integers. Received: input_shape={input_shape}"
        )
    if input_shape[-1] != 3 and weights is not None:
        raise ValueError(
            f"The input must have 3 channels; Received `input_shape={input_shape}`"
        )
    if fixed_size and (input_shape[0] is None or input_shape[1] is None):
        raise ValueError(
            "This model needs a fixed input height and width (its position embedding "
            f"is laid on a fixed token grid). Received: input_shape={input_shape}"
        )
    if any(side is not None and side < min_size for side in input_shape[:2]):
        raise ValueError(
            f"Input size must be at least {min_size}x{min_size}; Received: "
            f"input_shape={input_shape}"
        )
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def validate_activation(classifier_activation, weights):
    if weights is None:
        return
    activation = keras.activations.get(classifier_activation)
    if activation not in {keras.activations.get("softmax"), keras.activations.get(None)}:
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the "
            "`classifier_activation` argument when using pretrained weights, with "
            f"`include_top=True`; Received: classifier_activation={classifier_activation}"
        )


def head(x, include_top, pooling, classes, classifier_activation, weights):
    """Global average pool + "predictions", or the requested feature pooling."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        validate_activation(classifier_activation, weights)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def finish(img_input, input_tensor, outputs, name, weights, weights_id):
    """Build the functional model and load the requested weights."""
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        from keras_pf.weights import load_weights

        load_weights(model, weights, weights_id=weights_id)
    return model


def named_constructor(builder, config, weights_id, title, description, input_note,
                      default_weights="imagenet"):
    """A thin named constructor (`PFResNet50Max`, ...) over a family's generic builder,
    with the keras.applications signature. `weights_id` keys the weights registry; the
    user's `name=` never does."""

    def constructor(
        include_top=True,
        weights=default_weights,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=weights_id,
    ):
        return builder(
            **config,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
            weights_id=weights_id,
        )

    constructor.__name__ = constructor.__qualname__ = title
    # what the constructor builds, for code that rebuilds the same network another way
    # (keras_pf.hub's backbones): the family builder, its arguments, the registry id
    constructor.builder, constructor.config, constructor.weights_id = builder, dict(config), weights_id
    constructor.__doc__ = BASE_DOCSTRING.format(
        title=title, description=description, input_note=input_note)
    return constructor
