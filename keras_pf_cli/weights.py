"""`keras-pf weights list | download | import | verify | hash`: the published weights, the
cache, and integrity records of a user's own files."""


def add_arguments(parser):
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
                                                "a file against its integrity record")
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


def run(args):
    from keras_pf.weights import cache, registry

    if args.action == "list":
        print(f"cache: {cache.cache_dir()}")
        print(f"{'weights id':20} {'tag':16} {'top-1':>6} {'top-5':>6} {'params':>7}  "
              f"{'eval':17} cached  note")
        for weights_id, tag, is_default, info in registry.entries():
            entry = registry.WEIGHTS[weights_id]
            pre = registry.preprocessing(weights_id)
            fig = lambda v: f"{v:6.1f}" if v is not None else "     ?"  # noqa: E731
            name = tag + (" (imagenet)" if is_default else "")
            params = f"{entry['params'] / 1e6:6.1f}M" if entry.get("params") else "      ?"
            cached = "yes" if cache.cached_weights_path(weights_id, tag) else "no"
            print(f"{weights_id:20} {name:16} {fig(info['reported'].get('top1'))} "
                  f"{fig(info['reported'].get('top5'))} {params}  "
                  f"{pre['interpolation']} {pre['crop_ratio']}  {cached:6}  {info.get('note', '')}")
        return 0
    if args.action == "download":
        for weights_id, tag in _selected(args.model, args.tag if args.model else None):
            print(f"{weights_id}/{tag}: {cache.fetch(weights_id, tag)}")
        return 0
    if args.action == "import":
        path = cache.import_file(args.path, args.model, args.tag)
        print(f"{args.model}/{args.tag}: {args.path} -> {path}")
        return 0
    if args.action == "hash":
        from keras_pf.weights import integrity, safe_load

        for path in args.files:
            entry = safe_load.record_file(path)
            print(f"{path}: sha256={entry['sha256']} size={entry['size']} -> "
                  f"{integrity.sidecar_path(path)}")
        return 0
    import os

    if args.model is not None and os.path.isfile(args.model):
        from keras_pf.weights import integrity

        ok, message = integrity.verify_file(args.model)
        print(message)
        return 0 if ok else 1
    failed = checked = 0
    for weights_id, tag in _selected(args.model, args.tag):
        if args.model is None and cache.cached_weights_path(weights_id, tag) is None:
            continue  # with no model named, check only what is cached
        checked += 1
        try:
            path, digest, status = cache.verify(weights_id, tag)
            print(f"{weights_id}/{tag}: OK {path} sha256={digest} ({status})")
        except (OSError, ValueError) as error:
            failed += 1
            print(f"{weights_id}/{tag}: FAILED {error}")
    if checked == 0:
        print("nothing to verify: no registry weights are cached in " + cache.cache_dir())
    return 1 if failed else 0
