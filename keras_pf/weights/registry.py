"""The weights registry: one table of every published checkpoint, read by the code, the
CLI (`keras-pf weights list`) and the docs alike.

`WEIGHTS[weights_id]` describes one architecture (the named constructor's weights id,
never the user-given model name):

- `model`: the `keras_pf.MODELS` constructor the checkpoints are converted with (built
  at 224x224 with `weights=None`);
- `preprocessing`: the evaluation transform the weights expect, a `PREPROCESSING` name
  (or a dict of `image_size`, `crop_ratio`, `interpolation`);
- `params`: parameter count (BatchNorm statistics excluded);
- `tags`: one entry per published checkpoint; `"imagenet"` is an alias of the best one.
  Each has the original `source` (`gdrive:<id>` or an http(s) URL), `layout` (how the
  original file stores its tensors), the `reported` top-1/top-5, and, once converted by
  `tools/convert_weights.py`, the converted `file`, its `size` in bytes and `sha256`.
  `measured` is filled in by whoever runs `tools/evaluate_imagenet.py` on the converted file.

The table is data, `manifest.json` beside this module, rewritten by
`tools/convert_weights.py` (`write_table`). This module is a leaf: it imports nothing of
keras_pf but the atomic writer, so the cache, the downloads, the resolver and the CLI
can all read it. The cache lives in `cache`, the transport in `download`, loading into a
model in `loading`.
"""

import copy
import json
import os

from keras_pf.files import write_atomic

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.json")

IMAGENET_TAG = "imagenet"

# Evaluation transforms the weights expect, named in the table's `preprocessing`. Both
# resize the shorter side to 224 / 0.875 = 256, crop the central 224x224, and normalize
# with `keras_pf.preprocess_input` (ImageNet mean/std).
PREPROCESSING = {
    "resnet": {"image_size": 224, "crop_ratio": 0.875, "interpolation": "bilinear"},
    "deit": {"image_size": 224, "crop_ratio": 0.875, "interpolation": "bicubic"},  # DeiT's
}

def _read_manifest(path=None):
    with open(path or MANIFEST, encoding="utf-8") as f:
        return json.load(f)


WEIGHTS = _read_manifest()

# Converted files are looked for at `$KERAS_PF_WEIGHTS_URL/<file>` (a mirror), if set.
MIRROR_ENV = "KERAS_PF_WEIGHTS_URL"


class UnknownWeightsError(ValueError):
    pass


def register_weights(weights_id, tag, source, model=None, preprocessing=None, params=None,
                     reported=None, sha256=None, size=None, source_sha256=None,
                     layout="state_dict", note="", imagenet=False):
    """Add (or replace) `weights_id`/`tag` at runtime, e.g. for a private checkpoint.

    `model` is a `keras_pf.MODELS` name or a callable returning the model (built with
    `weights=None`) that the original checkpoint is converted with. `source` is
    `gdrive:<id>` or an http(s) URL of the original checkpoint; `source_sha256`, if
    given, is checked on download. `sha256`/`size` describe the converted file, which
    is then also looked for on the mirror. `imagenet=True` makes it the "imagenet" tag.
    """
    if tag == IMAGENET_TAG:
        raise ValueError(f"'{IMAGENET_TAG}' is an alias; register a named tag with imagenet=True")
    entry = WEIGHTS.setdefault(weights_id, {"model": model, "params": params,
                                            "preprocessing": "resnet", "tags": {}})
    if model is not None:
        entry["model"] = model
    if preprocessing is not None:
        entry["preprocessing"] = preprocessing
    if params is not None:
        entry["params"] = params
    if entry.get("model") is None:
        raise ValueError(f"register_weights({weights_id!r}, ...) needs `model` (how to build it)")
    entry["tags"][tag] = {"note": note, "source": source, "layout": layout,
                          "reported": dict(reported or {"top1": None, "top5": None}),
                          "measured": None, "file": f"{weights_id}_{tag}.weights.h5",
                          "size": size, "sha256": sha256, "source_sha256": source_sha256}
    if imagenet or IMAGENET_TAG not in entry:
        entry[IMAGENET_TAG] = tag
    return entry["tags"][tag]


def resolve(weights_id, tag):
    """`(entry, concrete tag, tag entry)` for `weights_id`/`tag` ("imagenet" resolved)."""
    entry = WEIGHTS.get(weights_id)
    if entry is None:
        known = ", ".join(sorted(WEIGHTS))
        raise UnknownWeightsError(
            f"No published weights for {weights_id or 'this model'} (weights tag '{tag}'). "
            f"Models with weights: {known}. Pass weights=None, a .weights.h5 file, or an "
            "original .pth checkpoint path."
        )
    concrete = entry.get(IMAGENET_TAG) if tag == IMAGENET_TAG else tag
    if concrete not in entry["tags"]:
        known = ", ".join([IMAGENET_TAG] + sorted(entry["tags"]))
        raise UnknownWeightsError(
            f"No weights tagged '{tag}' for {weights_id} (tags: {known}). Pass weights=None, "
            "a .weights.h5 file, or an original .pth checkpoint path."
        )
    return entry, concrete, entry["tags"][concrete]


def preprocessing(weights_id):
    """The evaluation transform `weights_id`'s weights expect (see `PREPROCESSING`)."""
    value = WEIGHTS[weights_id]["preprocessing"]
    return dict(PREPROCESSING[value] if isinstance(value, str) else value)


def entries():
    """Every `(weights_id, tag, is_imagenet, tag entry)` in table order."""
    for weights_id, entry in WEIGHTS.items():
        for tag, info in entry["tags"].items():
            yield weights_id, tag, entry.get(IMAGENET_TAG) == tag, info


# --- rewriting the table (tools/convert_weights.py) -----------------------------------

def format_table(table=None):
    """The manifest's JSON text of `table` (default `WEIGHTS`); entries registered at
    runtime with a callable `model` are left out (they are not published)."""
    table = WEIGHTS if table is None else table
    table = {k: copy.deepcopy(v) for k, v in table.items() if isinstance(v["model"], str)}
    return json.dumps(table, indent=2) + "\n"


def write_table(table=None, path=None):
    """Write `table` to the manifest (atomically)."""
    write_atomic(path or MANIFEST, format_table(table))
