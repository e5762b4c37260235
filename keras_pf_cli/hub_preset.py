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

from keras_pf_cli.args import positive_int


def add_arguments(parser):
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


def run(args):
    try:
        from keras_pf.hub.presets import write_hub_preset
    except ImportError as error:  # keras-hub not installed: one line, exit 2
        raise ValueError(str(error)) from None
    weights = "default" if args.weights is None else (None if args.weights.lower() == "none" else args.weights)
    write_hub_preset(args.model, args.output, weights=weights, input_size=args.input_size)
    output = os.path.abspath(args.output)
    print(f"wrote {output}: " + ", ".join(sorted(os.listdir(output))))
    print(f"load it with keras_hub.models.ImageClassifier.from_preset({output!r}) (or Backbone) "
          "after `import keras_pf.hub`; share it with keras_hub.upload_preset(URI, DIR)")
    return 0
