"""`keras-pf convert`: an original checkpoint to a Keras weights file."""

import os
import tempfile


def add_convert_arguments(parser):
    parser.add_argument("model", help="named constructor, e.g. PFResNet50Hybrid")
    parser.add_argument("checkpoint", help="original PyTorch checkpoint (.pth)")
    parser.add_argument("output", help="Keras weights file to write (.weights.h5)")
    parser.add_argument("--input-size", type=int, default=224,
                        help="input side the model is built at (default 224)")


def convert_checkpoint(model_name, checkpoint, output, input_size=224):
    """Build `model_name`, load the original `checkpoint`, write `output` atomically."""
    import keras_pf

    if model_name not in keras_pf.MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose from {', '.join(keras_pf.MODELS)}")
    if not str(output).endswith(".weights.h5"):
        raise ValueError(f"the output file name must end in .weights.h5 (Keras' rule); got {output}")
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    model = keras_pf.MODELS[model_name](weights=None, input_shape=(input_size, input_size, 3))
    keras_pf.load_torch_weights(model, checkpoint)
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    # Write beside the target and rename, so a failure never leaves a partial file.
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part.weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return model


def run_convert(args):
    model = convert_checkpoint(args.model, args.checkpoint, args.output, args.input_size)
    print(f"{args.model}: {len(model.weights)} weights from {args.checkpoint} -> {args.output}")
