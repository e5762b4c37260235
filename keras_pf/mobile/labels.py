"""Class names beside exported files and saved models: reading them (a JSON list such as
finetune's class_names.json, or one name per line), checking them against a model's
outputs, and where an exported file's `.labels.txt` goes."""

import json
import os


def labels_path(path):
    return os.fspath(path)[: -len(".tflite")] + ".labels.txt"


def model_labels(model, labels):
    """The class names for `model`'s output: `labels` checked, or ImageNet's for a
    1000-way classifier, or None."""
    out_shape = model.output_shape
    classes = out_shape[-1] if isinstance(out_shape, tuple) and len(out_shape) == 2 else None
    if labels is None:
        if classes != 1000:
            return None
        from keras_pf.models.imagenet import class_index

        return [name for _, name in (class_index()[i] for i in range(1000))]
    labels = [str(label) for label in labels]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a model with {classes} outputs")
    if any("\n" in label or not label.strip() for label in labels):
        raise ValueError("Labels must be non-empty single-line names")
    return labels


def read_labels(path):
    """Class names from a file: a JSON list (class_names.json) or one name per line."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read labels file {path!r}: {error}") from None
    if path.endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Labels file {path!r} is not valid JSON ({error}); it should be "
                             "a list of class names, as finetune's class_names.json") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"Labels file {path!r} must hold a JSON list of class names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


