"""`keras-pf demo`: the package end to end in one command.

Builds PF-ResNet50 (R50-hybrid), loads its ImageNet weights if they are in the cache
(otherwise says plainly that it runs with random weights), classifies a generated
sample image, and prints parameters, FLOPs and latency beside keras.applications.ResNet50.
"""

import numpy as np


from keras_pf_cli.args import positive_int


def add_arguments(parser):
    parser.add_argument("--image", help="an image file to classify instead of the generated sample")
    parser.add_argument("--runs", type=positive_int, default=10, help="timed runs per model (median)")


def sample_image(size=224):
    """A deterministic RGB test card: colour gradients with a bright disc."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    disc = ((xx - 0.5) ** 2 + (yy - 0.55) ** 2) < 0.08
    image = np.stack([xx, yy, 1 - xx], axis=-1) * 180 + 40
    image[disc] = (230, 200, 60)
    return image.astype("uint8")


def load_image(path, size=224):
    """Shorter side resized to size/0.875, then center crop (the evaluation recipe)."""
    from PIL import Image

    from keras_pf.training.data import read_image

    image = Image.fromarray(read_image(path))  # names the file if it cannot be used
    scale = size / 0.875 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def run(args):
    import keras

    import keras_pf
    from keras_pf.benchmark.profile import count_flops, count_params, measure_latency
    from keras_pf.weights import cache

    weights = cache.cached_weights_path("pf_resnet50_hybrid", "imagenet")
    model = keras_pf.PFResNet50(weights=weights)
    if weights:
        print(f"PF-ResNet50 (R50-hybrid) with ImageNet weights from {weights}")
    else:
        print("PF-ResNet50 (R50-hybrid) with RANDOM weights: no ImageNet weights in the cache "
              f"({cache.cache_dir()}). Get them with `keras-pf weights download "
              "pf_resnet50_hybrid` (or `keras-pf weights import PATH`); predictions below "
              "are meaningless until then.")

    image = load_image(args.image) if args.image else sample_image()
    source = args.image or "generated sample image (224x224 test card)"
    preds = model.predict(keras_pf.preprocess_input(image[None]), verbose=0)
    print(f"\nTop-5 for {source}:")
    for wnid, name, score in keras_pf.decode_predictions(preds, top=5)[0]:
        print(f"  {score:7.4f}  {name} ({wnid})")

    baseline = keras.applications.ResNet50(weights=None)
    rows = []
    for label, m in (("keras.applications.ResNet50", baseline), ("PF-ResNet50 (R50-hybrid)", model)):
        rows.append((label, count_params(m) / 1e6, count_flops(m) / 1e9,
                     measure_latency(m, runs=args.runs) * 1e3))
    print(f"\n{'model':30s} {'params (M)':>10s} {'GFLOPs':>8s} {'latency (ms)':>13s} {'vs ResNet50':>12s}")
    for label, params, flops, ms in rows:
        print(f"{label:30s} {params:10.2f} {flops:8.2f} {ms:13.1f} {ms / rows[0][3]:11.2f}x")
    print("(Keras eager call, batch 1, median; `keras-pf benchmark` measures compiled and "
          "TFLite latency.)")
