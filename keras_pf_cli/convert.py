"""`keras-pf convert`: an original checkpoint to a Keras weights file."""

from keras_pf_cli.args import json_object, positive_int


def add_arguments(parser):
    parser.add_argument("model", help="named constructor, e.g. PFResNet50Hybrid, or a generic "
                                      "builder (PFResNet, PFViT, PFPiT) with --model-args")
    parser.add_argument("checkpoint", help="original PyTorch checkpoint (.pth)")
    parser.add_argument("output", help="Keras weights file to write (.weights.h5)")
    parser.add_argument("--input-size", type=positive_int, default=224,
                        help="input side the model is built at (default 224)")
    parser.add_argument("--model-args", type=json_object, default=None,
                        help='JSON keyword arguments of a generic builder, e.g. '
                             '\'{"block": "max", "depths": [1, 1, 1, 1], "classes": 10}\'')


def run(args):
    from keras_pf.weights.convert import convert_checkpoint

    model = convert_checkpoint(args.model, args.checkpoint, args.output, args.input_size,
                               args.model_args)
    print(f"{args.model}: {len(model.weights)} weights from {args.checkpoint} -> {args.output}")
