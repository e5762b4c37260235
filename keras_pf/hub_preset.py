"""`keras-pf hub-preset MODEL -o DIR [--weights W]`: write a keras_pf model as a keras-hub
preset folder (backbone, ImageClassifier head, preprocessor with the weights'
evaluation transform), ready for `keras_hub.models.*.from_preset(DIR)` and for
keras-hub's `upload_preset("hf://...", DIR)` / `upload_preset("kaggle://...", DIR)`.

Unlike the named presets (`pf_resnet50_hybrid_imagenet`, ...), whose weights are
pointers into keras_pf's registry, this folder holds the weights themselves
(`model.weights.h5`, `task.weights.h5`): it needs nothing but keras-hub and keras_pf to
load, anywhere. Needs keras-hub (`pip install "keras_pf[hub]"`); `--help` imports
neither it nor TensorFlow.
"""

import os
import shutil
import sys

from keras_pf.cli import positive_int


def add_hub_preset_arguments(parser):
    parser.add_argument("model", help="a keras_pf model name (keras_pf.MODELS), e.g. PFResNet50Hybrid")
    parser.add_argument("-o", "--output", required=True,
                        help="the preset folder to write (new, or empty)")
    parser.add_argument("--weights", default=None,
                        help="weights tag (e.g. imagenet, paper), .weights.h5 or original .pth file; "
                             "'none' for random (default: the model's own default, 'imagenet' "
                             "where the paper published weights)")
    parser.add_argument("--input-size", type=positive_int, default=None,
                        help="the square side the preprocessor crops to (default 224); ViT/PiT "
                             "are built for it (position embedding resized), ResNets take any size")


def _check_output(output):
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.exists(output) and not (os.path.isdir(output) and not os.listdir(output)):
        raise ValueError(f"{output} already exists and is not an empty folder; choose a new folder "
                         "(a preset is written whole or not at all)")
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise ValueError(f"the folder {parent} (of --output) does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write into {parent} (of --output): permission denied")
    return output


def write_hub_preset(model_name, output, weights="default", input_size=None):
    """Write `model_name` with `weights` as a keras-hub preset folder `output`; returns
    the classifier task written."""
    import keras_pf

    if model_name not in keras_pf.MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; keras_pf models: {', '.join(keras_pf.MODEL_NAMES)}")
    output = _check_output(output)
    try:
        from keras_pf.hub import presets
    except ImportError as error:
        raise ValueError(str(error)) from None
    from keras_pf.weights import registry

    family, _, weights_id = presets.model_family(model_name)
    side = input_size or 224
    constructor = keras_pf.MODELS[model_name]
    kwargs = dict(classifier_activation=None, input_shape=(side, side, 3))
    if weights != "default":
        kwargs["weights"] = None if str(weights).lower() == "none" else weights
    model = constructor(**kwargs)
    image_shape = (None, None, 3) if family == "resnet" else (side, side, 3)
    backbone = presets.build_backbone(model_name, image_shape=image_shape)
    values = model.get_weights()
    head = model.get_layer("predictions").get_weights()
    shapes = [tuple(w.shape) for w in backbone.weights]
    if shapes != [v.shape for v in values[:-2]]:  # cannot happen: the same builder
        raise ValueError(f"{model_name}: the backbone's weights do not match the model's")
    backbone.set_weights(values[:-2])
    transform = registry.preprocessing(weights_id) if weights_id in registry.WEIGHTS \
        else dict(registry.PREPROCESSING["resnet" if family == "resnet" else "deit"])
    transform["image_size"] = side
    task = presets.build_classifier(backbone, transform)
    task.output_dense.set_weights(head)

    temporary = f"{output}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        task.save_to_preset(temporary)
        if os.path.isdir(output):
            os.rmdir(output)  # empty, checked above
        os.rename(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return task


def run_hub_preset(args):
    weights = "default" if args.weights is None else args.weights
    write_hub_preset(args.model, args.output, weights=weights, input_size=args.input_size)
    output = os.path.abspath(args.output)
    print(f"wrote {output}: " + ", ".join(sorted(os.listdir(output))))
    print(f"load it with keras_hub.models.ImageClassifier.from_preset({output!r}) (or Backbone) "
          "after `import keras_pf.hub`; share it with keras_hub.upload_preset(URI, DIR)",
          file=sys.stdout)
    return 0
