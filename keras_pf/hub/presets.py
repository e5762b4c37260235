"""keras_pf's named keras-hub presets: one per entry of the weights registry, and an
architecture-only one per named model without published weights.

| preset | what |
|---|---|
| `{weights_id}_imagenet` | the registry's "imagenet" weights of `weights_id`, e.g. `pf_resnet50_hybrid_imagenet` |
| `{weights_id}_{tag}` | one published checkpoint, e.g. `pf_resnet50_hybrid_paper`, `pf_vit_small_paper` |
| `{weights_id}` | architecture only (no weights published): `pf_resnet50_plain`, `pf_vit_tiny`, ... |

Each lives in a folder shipped in the package (`keras_pf/hub/builtin_presets/NAME/`),
written by `tools/write_hub_presets.py`: keras-hub's own files (config.json, task.json,
preprocessor.json, image_converter.json, metadata.json) with weight *pointers* into
keras_pf's registry where the weights would be (see `keras_pf.hub.weights`). So
`keras_hub.models.Backbone.from_preset("pf_resnet50_hybrid_imagenet")` and
`keras_hub.models.ImageClassifier.from_preset(...)` work once `keras_pf.hub` is
imported, fetch weights as `keras_pf.PFResNet50(weights="imagenet")` does, and with
`load_weights=False` download nothing.
"""

import json
import os

import keras

from keras_pf._compat import keras_hub as _compat
from keras_pf.files import atomic_folder
from keras_pf.models import resolve
from keras_pf.hub.weights import write_pointer
from keras_pf.weights import registry

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin_presets")
PRESET_FILES = (_compat.CONFIG_FILE, _compat.TASK_CONFIG_FILE, _compat.PREPROCESSOR_CONFIG_FILE,
                _compat.IMAGE_CONVERTER_CONFIG_FILE, _compat.METADATA_FILE,
                _compat.MODEL_WEIGHTS_FILE, _compat.TASK_WEIGHTS_FILE)

# family builder name -> (family, default evaluation transform, docs path)
_FAMILIES = {"PFResNet": ("resnet", "resnet"), "PFViT": ("vit", "deit"), "PFPiT": ("pit", "deit")}
TITLES = {"resnet": "ResNet", "vit": "ViT", "pit": "PiT"}


def family_classes(family):
    """`(Backbone, ImageClassifier, Preprocessor, ImageConverter)` classes of `family`."""
    # from the modules, not the package: the package's __init__ imports this module
    from keras_pf.hub.pf_pit.pf_pit_backbone import PFPiTBackbone
    from keras_pf.hub.pf_pit.pf_pit_image_classifier import PFPiTImageClassifier
    from keras_pf.hub.pf_pit.pf_pit_image_classifier_preprocessor import PFPiTImageClassifierPreprocessor
    from keras_pf.hub.pf_pit.pf_pit_image_converter import PFPiTImageConverter
    from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone
    from keras_pf.hub.pf_resnet.pf_resnet_image_classifier import PFResNetImageClassifier
    from keras_pf.hub.pf_resnet.pf_resnet_image_classifier_preprocessor import (
        PFResNetImageClassifierPreprocessor,
    )
    from keras_pf.hub.pf_resnet.pf_resnet_image_converter import PFResNetImageConverter
    from keras_pf.hub.pf_vit.pf_vit_backbone import PFViTBackbone
    from keras_pf.hub.pf_vit.pf_vit_image_classifier import PFViTImageClassifier
    from keras_pf.hub.pf_vit.pf_vit_image_classifier_preprocessor import PFViTImageClassifierPreprocessor
    from keras_pf.hub.pf_vit.pf_vit_image_converter import PFViTImageConverter

    return {
        "resnet": (PFResNetBackbone, PFResNetImageClassifier, PFResNetImageClassifierPreprocessor,
                   PFResNetImageConverter),
        "vit": (PFViTBackbone, PFViTImageClassifier, PFViTImageClassifierPreprocessor, PFViTImageConverter),
        "pit": (PFPiTBackbone, PFPiTImageClassifier, PFPiTImageClassifierPreprocessor, PFPiTImageConverter),
    }[family]


def model_family(model_name):
    """`(family, builder config, weights_id)` of a `keras_pf.MODELS` name."""
    constructor = resolve.constructor(model_name)  # the one "unknown model" error
    family, _ = _FAMILIES[constructor.builder.__name__]
    return family, dict(constructor.config), constructor.weights_id


def default_transform(family):
    """The evaluation transform of a family without published weights (its recipe's)."""
    return dict(registry.PREPROCESSING["resnet" if family == "resnet" else "deit"])


def default_image_shape(family):
    return (None, None, 3) if family == "resnet" else (224, 224, 3)


def build_backbone(model_name, image_shape=None, **kwargs):
    """The keras-hub backbone of the named keras_pf model `model_name` (random weights)."""
    family, config, weights_id = model_family(model_name)
    backbone_cls = family_classes(family)[0]
    image_shape = default_image_shape(family) if image_shape is None else tuple(image_shape)
    return backbone_cls(**config, image_shape=image_shape, name=f"{weights_id}_backbone", **kwargs)


def build_classifier(backbone, transform, num_classes=1000, activation=None):
    """keras-hub's ImageClassifier on `backbone`, its preprocessor applying `transform`
    (a registry `PREPROCESSING` dict: image_size, crop_ratio, interpolation)."""
    family = {cls: fam for fam in ("resnet", "vit", "pit") for cls in family_classes(fam)[:1]}[type(backbone)]
    _, classifier_cls, preprocessor_cls, converter_cls = family_classes(family)
    size = transform["image_size"]
    converter = converter_cls(image_size=(size, size) if isinstance(size, int) else tuple(size),
                              crop_ratio=transform["crop_ratio"],
                              interpolation=transform["interpolation"], name="image_converter")
    preprocessor = preprocessor_cls(image_converter=converter, name="preprocessor")
    return classifier_cls(backbone=backbone, num_classes=num_classes, activation=activation,
                          preprocessor=preprocessor, name=f"{backbone.name.removesuffix('_backbone')}_classifier")


def _serialized(layer):
    """What keras-hub's preset saver writes for `layer` (compile/build configs dropped)."""
    def drop(config):
        if isinstance(config, dict):
            for key in ("compile_config", "build_config"):
                config.pop(key, None)
            for value in config.values():
                drop(value)
        return config

    return drop(keras.saving.serialize_keras_object(layer))


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(value, indent=4) + "\n")


def write_pointer_preset(task, directory, weights_id, tag, model=None, metadata=None):
    """Write `task` (a keras_pf ImageClassifier) to `directory` as a keras-hub preset
    whose weights are pointers to registry entry `weights_id`/`tag` (`weights_id`
    None: architecture-only). The folder loads as a backbone, a classifier, its
    preprocessor and its image converter."""
    import keras_hub

    os.makedirs(directory, exist_ok=True)
    _write_json(os.path.join(directory, _compat.CONFIG_FILE), _serialized(task.backbone))
    _write_json(os.path.join(directory, _compat.TASK_CONFIG_FILE), _serialized(task))
    _write_json(os.path.join(directory, _compat.PREPROCESSOR_CONFIG_FILE), _serialized(task.preprocessor))
    _write_json(os.path.join(directory, _compat.IMAGE_CONVERTER_CONFIG_FILE),
                _serialized(task.preprocessor.image_converter))
    _write_json(os.path.join(directory, _compat.METADATA_FILE), {
        "keras_version": keras.version(),
        "keras_hub_version": keras_hub.__version__,
        "parameter_count": task.backbone.count_params(),
        "tasks": ["ImageClassifier"],
        "keras_pf": {"weights_id": weights_id, "tag": tag, "model": model, **(metadata or {})},
    })
    for name in (_compat.MODEL_WEIGHTS_FILE, _compat.TASK_WEIGHTS_FILE):
        write_pointer(os.path.join(directory, name), weights_id, tag, model)
    return directory


def register_preset(name, directory, description="", params=None):
    """Make the preset folder `directory` loadable as `from_preset(name)`."""
    from keras_pf.hub.preset_checks import read_json, registered_class

    directory = os.path.abspath(directory)
    config = read_json(directory, _compat.CONFIG_FILE)
    backbone_cls = registered_class(config, os.path.join(directory, _compat.CONFIG_FILE))
    entry = {"metadata": {"description": description, "params": params,
                          "path": "keras_pf", "keras_pf_backbone": backbone_cls.__name__},
             "kaggle_handle": directory}
    _compat.register_presets({name: entry}, backbone_cls)
    return entry


# --- the built-in presets ------------------------------------------------------------

def builtin_table():
    """`{preset name: (model name, weights_id or None, tag or None, description)}`,
    from the registry and `resolve.MODEL_NAMES`."""
    table = {}
    for weights_id, entry in registry.WEIGHTS.items():
        model = entry["model"]
        if not isinstance(model, str):
            continue  # registered at runtime with a builder: not a named model
        imagenet = entry.get(registry.IMAGENET_TAG)
        for tag in [registry.IMAGENET_TAG, *entry["tags"]]:
            concrete = imagenet if tag == registry.IMAGENET_TAG else tag
            info = entry["tags"].get(concrete)
            if info is None:
                continue
            top1 = (info.get("reported") or {}).get("top1")
            what = f"{model} ({weights_id}), ImageNet-1k weights '{concrete}'"
            what += f" ({info.get('note')})" if info.get("note") else ""
            what += f", reported top-1 {top1}" if top1 else ""
            if tag == registry.IMAGENET_TAG:
                what = f"the 'imagenet' weights: {what}"
            table[f"{weights_id}_{tag}"] = (model, weights_id, tag, what)
    with_weights = {v[0] for v in table.values()}
    for model in resolve.MODEL_NAMES:
        _, _, weights_id = model_family(model)
        if model not in with_weights and weights_id not in registry.WEIGHTS \
                and weights_id not in table:
            table[weights_id] = (model, None, None,
                                 f"{model}: architecture only (the paper published no weights); "
                                 "load with load_weights=False")
    return table


def builtin_presets(family):
    """keras-hub preset entries of `family` whose folders are shipped."""
    presets = {}
    for name, (model, weights_id, tag, description) in builtin_table().items():
        if model_family(model)[0] != family:
            continue
        folder = os.path.join(BUILTIN_DIR, name)
        if not os.path.isfile(os.path.join(folder, _compat.CONFIG_FILE)):
            continue
        params = registry.WEIGHTS.get(weights_id, {}).get("params") if weights_id else None
        presets[name] = {"metadata": {"description": description, "params": params,
                                      "path": f"pf_{family}",
                                      "keras_pf_backbone": f"PF{TITLES[family]}Backbone"},
                         "kaggle_handle": folder}
    return presets


def write_builtin_preset(name, root=BUILTIN_DIR):
    """Write the built-in preset `name` into `root/name` (architecture built at its
    default size, random weights never saved)."""
    model, weights_id, tag, _ = builtin_table()[name]
    family = model_family(model)[0]
    transform = (registry.preprocessing(weights_id) if weights_id
                 else default_transform(family))
    task = build_classifier(build_backbone(model), transform)
    directory = os.path.join(root, name)
    if os.path.isdir(directory):
        for stale in os.listdir(directory):
            os.remove(os.path.join(directory, stale))
    write_pointer_preset(task, directory, weights_id, tag, model=model,
                         metadata={"family": family, "transform": transform})
    return directory


# --- a preset that holds its weights (keras-pf hub-preset) -------------------------------

def _check_output(output):
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.exists(output) and not (os.path.isdir(output) and not os.listdir(output)):
        raise ValueError(f"{output} already exists and is not an empty folder; choose a new folder "
                         "(a preset is written whole or not at all)")
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise ValueError(f"the folder {parent} (of the output) does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write into {parent} (of the output): permission denied")
    return output


def write_hub_preset(model_name, output, weights="default", input_size=None):
    """Write the named keras_pf model `model_name` with `weights` (a registry tag, a
    `.weights.h5` or `.pth` path, None for random, "default" for the constructor's
    default) as a keras-hub preset folder `output`, weights included: the backbone, an
    ImageClassifier head and the preprocessor with the weights' evaluation transform,
    ready for `from_preset(output)` and keras-hub's `upload_preset`. Written through a
    temporary folder, moved into place when complete: whole or not at all. Returns
    the classifier task."""

    family, _, weights_id = model_family(model_name)
    output = _check_output(output)
    side = input_size or 224
    kwargs = dict(classifier_activation=None, input_shape=(side, side, 3))
    if weights != "default":
        kwargs["weights"] = weights
    model = resolve.constructor(model_name)(**kwargs)
    image_shape = default_image_shape(family) if family == "resnet" else (side, side, 3)
    backbone = build_backbone(model_name, image_shape=image_shape)
    values = model.get_weights()
    if [tuple(w.shape) for w in backbone.weights] != [v.shape for v in values[:-2]]:
        raise ValueError(f"{model_name}: the backbone's weights do not match the model's")  # same builder: never
    backbone.set_weights(values[:-2])
    transform = registry.preprocessing(weights_id) if weights_id in registry.WEIGHTS else default_transform(family)
    transform["image_size"] = side
    task = build_classifier(backbone, transform)
    task.output_dense.set_weights(model.get_layer("predictions").get_weights())

    # built in the private temporary folder, moved into place whole (a kill leaves
    # nothing beside `output`; an empty folder there, checked above, is replaced)
    with atomic_folder(output) as temporary:
        task.save_to_preset(temporary)
    return task
