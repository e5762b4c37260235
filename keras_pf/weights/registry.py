"""The weights registry: one table of every published checkpoint, read by the code and
the docs alike. Entries are keyed by the model's weights id (never by the user-given
model name) and a tag; "imagenet" is the best published checkpoint of a model."""

# Reported figures and sources from the paper's repository (see README, "Weights").
WEIGHTS = {
    "pf_resnet50_hybrid": {
        "imagenet": "long",
        "long": {"source": "gdrive:1f5fOwEItFITqzofvQ6d-kLLOTs-c1k3o", "top1": 78.0, "top5": 93.5,
                 "params": 17_330_600, "note": "R50-hybrid, longer training"},
        "paper": {"source": "gdrive:1CyajEQUfWo9oetqcIhexVjfRXU-iGHk1", "top1": 77.1, "top5": 93.1,
                  "params": 17_330_600, "note": "R50-hybrid, as in the paper's table"},
    },
    "pf_resnet50_max": {
        "imagenet": "long",
        "long": {"source": "gdrive:1TQfwMXENn7s78Myc58svKVpHi5OVsdGX", "top1": 75.5, "top5": 92.1,
                 "params": 14_232_232, "note": "R50-max, longer training"},
        "paper": {"source": "gdrive:1MoCdVLPau4XuI0BVGEwDkiwibpybqWTX", "top1": 74.3, "top5": 92.0,
                  "params": 14_232_232, "note": "R50-max, as in the paper's table"},
    },
    "pf_vit_small": {
        "imagenet": "paper",
        "paper": {"source": "gdrive:19lfagLJDXWvVHcb8Qm_U4_A_Kr7qYLv7", "top1": None, "top5": None,
                  "params": 23_819_368, "note": "ViT-S-max; recipe not stated (74.2 / 77.3 / 80.0)"},
    },
    "pf_pit_small": {
        "imagenet": "paper",
        "paper": {"source": "gdrive:1S9JJM2WGtDtpo-6Me7Ak74nJOlOeBKeH", "top1": None, "top5": None,
                  "params": 25_119_784, "note": "PiT-S-max; recipe not stated (75.7 / 78.1 / 80.8)"},
    },
}


def load_tagged_weights(model, weights_id, tag):
    entry = WEIGHTS.get(weights_id, {})
    if tag not in entry:
        known = sorted(entry) or "none"
        raise ValueError(
            f"No weights tagged '{tag}' for {weights_id or 'this model'} (tags: {known}). "
            "Pass weights=None, a .weights.h5 file, or an original .pth checkpoint path."
        )
    raise NotImplementedError("downloading registry weights: see issue 3")


def cache_dir():
    """`$KERAS_HOME/models/keras_pf` (default `~/.keras/models/keras_pf`), as Keras caches."""
    import os

    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", "keras_pf")


def cached_weights_path(weights_id, tag):
    """The cached converted file of `weights_id`/`tag` if it is there, else None."""
    import os

    entry = WEIGHTS.get(weights_id, {})
    tag = entry.get(tag) if isinstance(entry.get(tag), str) else tag
    path = os.path.join(cache_dir(), f"{weights_id}_{tag}.weights.h5")
    return path if os.path.exists(path) else None
