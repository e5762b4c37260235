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

The table between the BEGIN/END markers is rewritten by `tools/convert_weights.py`
(`write_table`); keep comments outside it.
"""

import copy
import os
import pprint
import re

from keras_pf.files import write_atomic

IMAGENET_TAG = "imagenet"

# Evaluation transforms the weights expect, named in the table's `preprocessing`. Both
# resize the shorter side to 224 / 0.875 = 256, crop the central 224x224, and normalize
# with `keras_pf.preprocess_input` (ImageNet mean/std).
PREPROCESSING = {
    "resnet": {"image_size": 224, "crop_ratio": 0.875, "interpolation": "bilinear"},
    "deit": {"image_size": 224, "crop_ratio": 0.875, "interpolation": "bicubic"},  # DeiT's
}

# BEGIN WEIGHTS TABLE
WEIGHTS = {'pf_resnet50_hybrid': {'model': 'PFResNet50Hybrid',
                        'params': 17330600,
                        'preprocessing': 'resnet',
                        'imagenet': 'long',
                        'tags': {'long': {'note': 'R50-hybrid, longer training',
                                          'source': 'gdrive:1f5fOwEItFITqzofvQ6d-kLLOTs-c1k3o',
                                          'layout': 'state_dict',
                                          'reported': {'top1': 78.0, 'top5': 93.5},
                                          'measured': None,
                                          'file': 'pf_resnet50_hybrid_long.weights.h5',
                                          'size': None,
                                          'sha256': None,
                                          'source_sha256': None},
                                 'paper': {'note': "R50-hybrid, the paper's table",
                                           'source': 'gdrive:1CyajEQUfWo9oetqcIhexVjfRXU-iGHk1',
                                           'layout': 'state_dict',
                                           'reported': {'top1': 77.1, 'top5': 93.1},
                                           'measured': None,
                                           'file': 'pf_resnet50_hybrid_paper.weights.h5',
                                           'size': None,
                                           'sha256': None,
                                           'source_sha256': None}}},
 'pf_resnet50_max': {'model': 'PFResNet50Max',
                     'params': 14232232,
                     'preprocessing': 'resnet',
                     'imagenet': 'long',
                     'tags': {'long': {'note': 'R50-max, longer training',
                                       'source': 'gdrive:1TQfwMXENn7s78Myc58svKVpHi5OVsdGX',
                                       'layout': 'state_dict',
                                       'reported': {'top1': 75.5, 'top5': 92.1},
                                       'measured': None,
                                       'file': 'pf_resnet50_max_long.weights.h5',
                                       'size': None,
                                       'sha256': None,
                                       'source_sha256': None},
                              'paper': {'note': "R50-max, the paper's table",
                                        'source': 'gdrive:1MoCdVLPau4XuI0BVGEwDkiwibpybqWTX',
                                        'layout': 'state_dict',
                                        'reported': {'top1': 74.3, 'top5': 92.0},
                                        'measured': None,
                                        'file': 'pf_resnet50_max_paper.weights.h5',
                                        'size': None,
                                        'sha256': None,
                                        'source_sha256': None}}},
 'pf_vit_small': {'model': 'PFViTSmall',
                  'params': 23819368,
                  'preprocessing': 'deit',
                  'imagenet': 'paper',
                  'tags': {'paper': {'note': 'ViT-S-max; training recipe not stated: top-1 is '
                                             '74.2 (plain), 77.3 (CutMix) or 80.0 (DeiT '
                                             'recipe) until measured',
                                     'source': 'gdrive:19lfagLJDXWvVHcb8Qm_U4_A_Kr7qYLv7',
                                     'layout': 'deit',
                                     'reported': {'top1': None,
                                                  'top5': None,
                                                  'top1_by_recipe': {'plain': 74.2,
                                                                     'cutmix': 77.3,
                                                                     'deit': 80.0},
                                                  'recipe': 'unknown'},
                                     'measured': None,
                                     'file': 'pf_vit_small_paper.weights.h5',
                                     'size': None,
                                     'sha256': None,
                                     'source_sha256': None}}},
 'pf_pit_small': {'model': 'PFPiTSmall',
                  'params': 25119784,
                  'preprocessing': 'deit',
                  'imagenet': 'paper',
                  'tags': {'paper': {'note': 'PiT-S-max; training recipe not stated: top-1 is '
                                             '75.7 (plain), 78.1 (CutMix) or 80.8 (DeiT '
                                             'recipe) until measured',
                                     'source': 'gdrive:1S9JJM2WGtDtpo-6Me7Ak74nJOlOeBKeH',
                                     'layout': 'deit',
                                     'reported': {'top1': None,
                                                  'top5': None,
                                                  'top1_by_recipe': {'plain': 75.7,
                                                                     'cutmix': 78.1,
                                                                     'deit': 80.8},
                                                  'recipe': 'unknown'},
                                     'measured': None,
                                     'file': 'pf_pit_small_paper.weights.h5',
                                     'size': None,
                                     'sha256': None,
                                     'source_sha256': None}}}}
# END WEIGHTS TABLE

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


def build_model(weights_id, **kwargs):
    """The architecture of `weights_id` with `weights=None` (224x224 unless overridden)."""
    import keras_pf

    model = WEIGHTS[weights_id]["model"]
    if callable(model):
        return model(**kwargs)
    return keras_pf.MODELS[model](weights=None, **kwargs)


def load_tagged_weights(model, weights_id, tag):
    """Load the weights tagged `tag` into `model`: from the cache, else from the mirror,
    else from the original checkpoint (downloaded, converted once, cached)."""
    from keras_pf.weights import download, load_keras_weights

    path = download.fetch(weights_id, tag)
    try:
        load_keras_weights(model, path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"The cached weights {path} do not load into model '{model.name}' ({error}). "
            f"Check them with `keras-pf weights verify {weights_id}`; delete the file to "
            "download it again."
        ) from error
    download.record_if_unrecorded(path)
    return model


def cache_dir():
    """`$KERAS_HOME/models/keras_pf` (default `~/.keras/models/keras_pf`), as Keras caches."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", "keras_pf")


def weights_path(weights_id, tag):
    """Where the converted file of `weights_id`/`tag` lives in the cache (may not exist)."""
    _, _, info = resolve(weights_id, tag)
    return os.path.join(cache_dir(), info["file"])


def cached_weights_path(weights_id, tag):
    """The cached converted file of `weights_id`/`tag` if it is there, else None."""
    try:
        path = weights_path(weights_id, tag)
    except UnknownWeightsError:
        return None
    return path if os.path.exists(path) else None


# --- rewriting the table (tools/convert_weights.py) -----------------------------------

def format_table(table=None):
    """The Python source of `table` (default `WEIGHTS`); entries registered at runtime
    with a callable `model` are left out (they are not published)."""
    table = WEIGHTS if table is None else table
    table = {k: copy.deepcopy(v) for k, v in table.items() if isinstance(v["model"], str)}
    return "WEIGHTS = " + pprint.pformat(table, width=96, sort_dicts=False)


def write_table(table=None, path=None):
    """Replace the table in this module's source (atomically) with `table`."""
    path = path or os.path.abspath(__file__)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    pattern = re.compile(r"(# BEGIN WEIGHTS TABLE\n).*?(\n# END WEIGHTS TABLE)", re.S)
    if not pattern.search(source):
        raise ValueError(f"{path} has no BEGIN/END WEIGHTS TABLE markers")
    new = pattern.sub(lambda m: m[1] + format_table(table) + m[2], source)
    write_atomic(path, new)
