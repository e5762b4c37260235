#!/usr/bin/env python
"""Top-1/top-5 of a keras_pf model and weights on ImageNet validation (or any labelled
image set), printed beside the figures the registry reports.

    python tools/evaluate_imagenet.py pf_resnet50_hybrid --weights long \
        --data tfds:imagenet2012:validation --manual-dir ~/imagenet_tars
    python tools/evaluate_imagenet.py pf_vit_small --data /data/imagenet/val

MODEL is a weights id of the registry (`keras-pf weights list`) or a `keras_pf.MODELS`
name. `--weights` is a registry tag (default "imagenet") or a file (.weights.h5 or an
original .pth). Images are resized and cropped as the registry says those weights expect
(`--image-size`, `--crop-ratio`, `--interpolation` override), then normalized with
`keras_pf.preprocess_input`.

Labels: `tfds:imagenet2012` labels are ImageNet class indices. In an image folder whose
subfolder names are all ImageNet WordNet ids (n01440764, ...), each subfolder maps to
its index in the shipped class index (so a subset of classes works); otherwise the
sorted subfolder position is the class index.
"""

import argparse
import os
import sys
import time

METRIC_KEYS = ("top1", "top5")


def resolve_model(name):
    """A registry weights id from a weights id or a MODELS constructor name."""
    from keras_pf.weights import registry

    if name in registry.WEIGHTS:
        return name
    for weights_id, entry in registry.WEIGHTS.items():
        if entry["model"] == name:
            return weights_id
    known = ", ".join(sorted(registry.WEIGHTS))
    raise ValueError(f"unknown model {name!r}: use a weights id ({known}) or its constructor name")


def label_mapping(class_names, num_classes):
    """Dataset label -> model class index (see the module docstring)."""
    from keras_pf.models.imagenet import class_index

    wnids = {wnid: index for index, (wnid, _) in class_index().items()}
    if num_classes == len(wnids) and all(name in wnids for name in class_names):
        return [wnids[name] for name in class_names]
    if len(class_names) > num_classes:
        raise ValueError(
            f"the data has {len(class_names)} classes, the model {num_classes}; name the "
            "folders with ImageNet WordNet ids or use a model with as many classes"
        )
    return list(range(len(class_names)))


def evaluate(model, dataset, mapping, limit=None, progress=True):
    """`{"top1", "top5", "images"}` in percent over `dataset` (at most `limit` images)."""
    import numpy as np

    mapping = np.asarray(mapping)
    correct1 = correct5 = seen = 0
    start = time.time()
    for images, labels in dataset:
        logits = np.asarray(model(images, training=False))
        labels = mapping[np.asarray(labels)]
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1)[:, :k]
        correct1 += int(np.sum(top[:, 0] == labels))
        correct5 += int(np.sum(np.any(top == labels[:, None], axis=1)))
        seen += len(labels)
        if progress:
            print(f"\r{seen} images, top-1 {100 * correct1 / seen:.2f}% "
                  f"({seen / (time.time() - start):.0f} img/s)", end="", file=sys.stderr)
        if limit and seen >= limit:
            break
    if progress:
        print(file=sys.stderr)
    if not seen:
        raise ValueError("the dataset has no images")
    return {"top1": 100 * correct1 / seen, "top5": 100 * correct5 / seen, "images": seen}


def reported_figures(weights_id, weights):
    """The registry's reported figures for a tag, or {} for a file."""
    from keras_pf.weights import registry

    try:
        _, _, info = registry.resolve(weights_id, weights)
    except ValueError:
        return {}
    return info["reported"]


def format_table(weights_id, weights, reported, measured):
    def cell(value):
        return f"{value:.2f}" if isinstance(value, (int, float)) else "?"

    rows = [f"{'model':20} {'weights':12} {'':9} {'top-1':>7} {'top-5':>7}",
            f"{weights_id:20} {str(weights)[-12:]:12} {'reported':9} "
            f"{cell(reported.get('top1')):>7} {cell(reported.get('top5')):>7}",
            f"{'':20} {'':12} {'measured':9} {cell(measured['top1']):>7} "
            f"{cell(measured['top5']):>7}   ({measured['images']} images)"]
    by_recipe = reported.get("top1_by_recipe")
    if by_recipe:
        rows.append(f"reported top-1 by training recipe (which one made this file is "
                    f"{reported.get('recipe', 'unknown')}): "
                    + ", ".join(f"{k} {v}" for k, v in by_recipe.items()))
    if reported.get("top1") is not None:
        delta = measured["top1"] - reported["top1"]
        rows.append(f"top-1 difference {delta:+.2f} points "
                    + ("(within 0.1)" if abs(delta) <= 0.1 else "(MORE than 0.1)"))
    return "\n".join(rows)


def record(weights_id, tag, measured, data):
    """Write `measured` into the registry's entry of `weights_id`/`tag` (and the recipe
    whose reported top-1 it matches to 0.1, if the recipe was unknown)."""
    from keras_pf.weights import registry

    _, tag, info = registry.resolve(weights_id, tag)
    info["measured"] = {"top1": round(measured["top1"], 3), "top5": round(measured["top5"], 3),
                        "images": measured["images"], "data": data}
    reported = info["reported"]
    for recipe, top1 in (reported.get("top1_by_recipe") or {}).items():
        if reported.get("recipe") == "unknown" and abs(measured["top1"] - top1) <= 0.1:
            reported["recipe"] = recipe
    registry.write_table()
    return info


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="weights id (pf_resnet50_hybrid) or constructor (PFResNet50Hybrid)")
    parser.add_argument("--weights", default="imagenet", help="registry tag or weights file")
    parser.add_argument("--data", default="tfds:imagenet2012:validation",
                        help="image folder or tfds:NAME[:SPLIT] (default %(default)s)")
    parser.add_argument("--manual-dir", help="tfds manual dir (ImageNet's tar files)")
    parser.add_argument("--data-dir", help="tfds data dir")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--crop-ratio", type=float)
    parser.add_argument("--interpolation")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if top-1 is more than 0.1 from the reported figure")
    parser.add_argument("--record", action="store_true",
                        help="write the measured figures (and, for a tag of unknown training "
                             "recipe, the recipe they match) into the weights registry")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from keras_pf.training import data
    from keras_pf.models import resolve
    from keras_pf.weights import load_weights, registry

    weights_id = resolve_model(args.model)
    transform = registry.preprocessing(weights_id)
    for key in ("image_size", "crop_ratio", "interpolation"):
        if getattr(args, key) is not None:
            transform[key] = getattr(args, key)
    model = resolve.weights_architecture(weights_id)
    load_weights(model, os.path.expanduser(args.weights) if os.path.exists(
        os.path.expanduser(args.weights)) else args.weights, weights_id=weights_id)
    dataset, class_names = data.eval_dataset(
        args.data, image_size=transform["image_size"], crop_ratio=transform["crop_ratio"],
        interpolation=transform["interpolation"], batch_size=args.batch_size,
        data_dir=args.data_dir, manual_dir=args.manual_dir)
    mapping = label_mapping(class_names, model.output_shape[-1])
    measured = evaluate(model, dataset, mapping, args.limit, progress=not args.quiet)
    print(f"{args.data}: resize shorter side to {transform['image_size']}/{transform['crop_ratio']} "
          f"({transform['interpolation']}), center crop {transform['image_size']}")
    reported = reported_figures(weights_id, args.weights)
    print(format_table(weights_id, args.weights, reported, measured))
    if args.record:
        if not reported:
            raise ValueError("--record needs a registry tag as --weights, not a file")
        record(weights_id, args.weights, measured, args.data)
        print(f"recorded in {registry.__file__}")
    if args.check and (reported.get("top1") is None
                       or abs(measured["top1"] - reported["top1"]) > 0.1):
        measured["check_failed"] = True
    return measured


if __name__ == "__main__":
    try:
        sys.exit(1 if main().get("check_failed") else 0)
    except (ValueError, OSError) as error:
        print(f"evaluate_imagenet: error: {error}", file=sys.stderr)
        sys.exit(2)
