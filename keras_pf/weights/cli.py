"""`keras-pf convert`: an original checkpoint to a Keras weights file."""

import os


def add_convert_arguments(parser):
    parser.add_argument("model", help="named constructor, e.g. PFResNet50Hybrid, or a generic "
                                      "builder (PFResNet, PFViT, PFPiT) with --model-args")
    parser.add_argument("checkpoint", help="original PyTorch checkpoint (.pth)")
    parser.add_argument("output", help="Keras weights file to write (.weights.h5)")
    parser.add_argument("--input-size", type=int, default=224,
                        help="input side the model is built at (default 224)")
    parser.add_argument("--model-args", default=None,
                        help='JSON keyword arguments of a generic builder, e.g. '
                             '\'{"block": "max", "depths": [1, 1, 1, 1], "classes": 10}\'')


GENERIC_BUILDERS = ("PFResNet", "PFViT", "PFPiT")


def _model_args(text):
    import json

    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model-args is not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--model-args must be a JSON object of keyword arguments: {text!r}")
    return value


def convert_checkpoint(model_name, checkpoint, output, input_size=224, model_args=None):
    """Build `model_name` (with `model_args` for a generic builder), load the original
    `checkpoint`, write `output` atomically."""
    import keras_pf
    from keras_pf.weights.convert import save_converted

    builders = {**keras_pf.MODELS, **{name: getattr(keras_pf, name) for name in GENERIC_BUILDERS}}
    if model_name not in builders:
        raise ValueError(f"unknown model {model_name!r}; choose from {', '.join(builders)}")
    if model_args and model_name not in GENERIC_BUILDERS:
        raise ValueError(f"--model-args apply to the generic builders ({', '.join(GENERIC_BUILDERS)}), "
                         f"not {model_name}")
    if not str(output).endswith(".weights.h5"):
        raise ValueError(f"the output file name must end in .weights.h5 (Keras' rule); got {output}")
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    try:
        model = builders[model_name](weights=None, input_shape=(input_size, input_size, 3),
                                     **(model_args or {}))
    except TypeError as error:  # an unknown keyword
        raise ValueError(f"--model-args do not fit {model_name}: {error}") from None
    return save_converted(model, checkpoint, output)


def run_convert(args):
    model = convert_checkpoint(args.model, args.checkpoint, args.output, args.input_size,
                               _model_args(args.model_args))
    print(f"{args.model}: {len(model.weights)} weights from {args.checkpoint} -> {args.output}")


# --- `keras-pf weights list | download | import | verify` ----------------------------

def add_weights_arguments(parser):
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every published checkpoint, its figures and cache state")
    download = actions.add_parser("download", help="get weights into the cache (all by default)")
    download.add_argument("model", nargs="?", help="weights id, e.g. pf_resnet50_hybrid")
    download.add_argument("--tag", default="imagenet")
    imported = actions.add_parser(
        "import", help="put a manually downloaded checkpoint (.pth) or .weights.h5 in the cache")
    imported.add_argument("path")
    imported.add_argument("--model", required=True, help="weights id, e.g. pf_resnet50_hybrid")
    imported.add_argument("--tag", default="imagenet")
    verify = actions.add_parser("verify", help="check cached files (sha256, loading), or "
                                                "files against their integrity records")
    verify.add_argument("model", nargs="?", help="weights id, or a file with an integrity "
                                                 "record (default: every cached file)")
    verify.add_argument("--tag", default=None)
    hashed = actions.add_parser("hash", help="write the integrity record FILE.sha256.json of "
                                             "weights or model files, checked on every load")
    hashed.add_argument("files", nargs="+", metavar="FILE")


def _selected(model, tag):
    from keras_pf.weights import registry

    if model is None:
        return [(weights_id, t) for weights_id, t, _, _ in registry.entries()]
    _, concrete, _ = registry.resolve(model, tag or "imagenet")
    return [(model, concrete)] if tag else [(model, t) for t in registry.WEIGHTS[model]["tags"]]


def run_weights(args):
    from keras_pf.weights import download, registry

    if args.action == "list":
        print(f"cache: {registry.cache_dir()}")
        print(f"{'weights id':20} {'tag':16} {'top-1':>6} {'top-5':>6} {'params':>7}  "
              f"{'eval':17} cached  note")
        for weights_id, tag, is_default, info in registry.entries():
            entry = registry.WEIGHTS[weights_id]
            pre = registry.preprocessing(weights_id)
            fig = lambda v: f"{v:6.1f}" if v is not None else "     ?"  # noqa: E731
            name = tag + (" (imagenet)" if is_default else "")
            params = f"{entry['params'] / 1e6:6.1f}M" if entry.get("params") else "      ?"
            cached = "yes" if registry.cached_weights_path(weights_id, tag) else "no"
            print(f"{weights_id:20} {name:16} {fig(info['reported'].get('top1'))} "
                  f"{fig(info['reported'].get('top5'))} {params}  "
                  f"{pre['interpolation']} {pre['crop_ratio']}  {cached:6}  {info.get('note', '')}")
        return 0
    if args.action == "download":
        for weights_id, tag in _selected(args.model, args.tag if args.model else None):
            print(f"{weights_id}/{tag}: {download.fetch(weights_id, tag)}")
        return 0
    if args.action == "import":
        path = download.import_file(args.path, args.model, args.tag)
        print(f"{args.model}/{args.tag}: {args.path} -> {path}")
        return 0
    if args.action == "hash":
        from keras_pf.weights.integrity_cli import run_hash

        return run_hash(args.files)
    if args.model is not None and os.path.isfile(args.model):
        from keras_pf.weights.integrity_cli import run_verify_file

        return run_verify_file(args.model)
    failed = checked = 0
    for weights_id, tag in _selected(args.model, args.tag):
        if args.model is None and registry.cached_weights_path(weights_id, tag) is None:
            continue  # with no model named, check only what is cached
        checked += 1
        try:
            path, digest, status = download.verify(weights_id, tag)
            print(f"{weights_id}/{tag}: OK {path} sha256={digest} ({status})")
        except (OSError, ValueError) as error:
            failed += 1
            print(f"{weights_id}/{tag}: FAILED {error}")
    if checked == 0:
        print("nothing to verify: no registry weights are cached in " + registry.cache_dir())
    return 1 if failed else 0
