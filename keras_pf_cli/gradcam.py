"""`keras-pf gradcam`: a Grad-CAM heat map of a class over an image, as PNG
(`keras_pf.models.gradcam`)."""

from keras_pf_cli.args import non_negative_int, unit_interval


def add_arguments(parser):
    parser.add_argument("model", help="model name (a keras_pf constructor, e.g. PFResNet50) or a saved .keras classifier")
    parser.add_argument("image", help="image file (jpg, png, ...)")
    parser.add_argument("-o", "--output", required=True, help="output PNG")
    parser.add_argument("--weights", default="imagenet",
                        help="weights tag or path for a named model, or 'none' (default imagenet)")
    parser.add_argument("--class-index", type=non_negative_int, default=None,
                        help="class to explain (default: top-1)")
    parser.add_argument("--layer", default=None, help="feature layer (default: the last stage's output)")
    parser.add_argument("--crop-ratio", type=unit_interval, default=0.875,
                        help="center crop as in evaluation, in (0, 1]")


def run(args):
    from PIL import Image, ImageDraw

    from keras_pf.files import atomic_output
    from keras_pf.models import resolve
    from keras_pf.models.gradcam import gradcam, overlay
    from keras_pf.models.imagenet import preprocess_input
    from keras_pf.training.data import eval_transform, read_image

    if not args.output.lower().endswith(".png"):
        raise ValueError(f"--output must be a .png file; received {args.output!r}.")
    resolve.check_name(args.model, files=True)
    pixels = read_image(args.image)  # before the model is built: a bad image fails fast
    weights = None if str(args.weights).lower() == "none" else args.weights
    model, names = resolve.resolve(args.model, weights=weights)
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        raise ValueError("gradcam needs a model with a fixed input size.")
    classes = model.output_shape[-1]
    if args.class_index is not None and args.class_index >= classes:
        raise ValueError(f"--class-index {args.class_index} is out of range: the model has "
                         f"{classes} classes (0 to {classes - 1}).")
    crop = eval_transform(pixels, (height, width), args.crop_ratio).numpy()
    heatmap, class_index = gradcam(model, preprocess_input(crop), args.class_index, args.layer)
    label = str(class_index)
    if names is not None and class_index < len(names):
        label = f"{class_index} ({names[class_index]})"
    elif model.output_shape[-1] == 1000:
        from keras_pf.models.imagenet import class_index as imagenet_classes

        label = f"{class_index} ({imagenet_classes()[class_index][1]})"
    result = Image.fromarray(overlay(crop, heatmap))
    ImageDraw.Draw(result).text((4, 4), label, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    with atomic_output(args.output) as tmp:
        result.save(tmp, format="PNG")
    print(f"class {label}: Grad-CAM -> {args.output}")
