"""Presets: save_to_preset / from_preset round trips in a new process, the named
presets of every registry entry, and their weights resolved through keras_pf's own
registry (a 127.0.0.1 server stands for Drive and the mirror, as in
tests/weights/test_weights_download.py, whose fixtures these tests share)."""

import hashlib
import json
import os

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import keras_pf  # noqa: E402
import keras_pf.hub  # noqa: E402
import hub_helpers  # noqa: F401,E402  (the shared folders on the path)
from hub_helpers import FAMILIES, SIZE, images, run_python, tiny_backbone  # noqa: E402
from keras_pf.hub import presets  # noqa: E402
from keras_pf.hub.weights import read_pointer  # noqa: E402
from keras_pf.weights import registry  # noqa: E402
from test_weights_download import (  # noqa: E402,F401  (cache, server: fixtures)
    CASE,
    TAG,
    WEIGHTS_ID,
    ParityCase,
    build_case_model,
    cache,
    cache_files,
    register_test_entry,
    server,
)

TRANSFORM = {"image_size": SIZE, "crop_ratio": 0.875, "interpolation": "bilinear"}
PRESET = "test_pf_resnet_tiny_imagenet"


def case_backbone():
    """The keras-hub backbone of the parity case's architecture (R50-hybrid, reduced)."""
    config = ParityCase(CASE).config
    return keras_pf.hub.PFResNetBackbone(block=config["block"], depths=config["layers"],
                                         width_mult=config["width_mult"], image_shape=(SIZE, SIZE, 3))


@pytest.fixture
def pointer_preset(tmp_path, cache):
    """A named preset (registered as PRESET) whose weights point to the test registry
    entry; returns its folder. The registry entry is registered by the test."""
    task = presets.build_classifier(case_backbone(), TRANSFORM, num_classes=10)
    folder = presets.write_pointer_preset(task, str(tmp_path / "preset"), WEIGHTS_ID, "imagenet",
                                          model="parity case")
    presets.register_preset(PRESET, folder, description="a test preset")
    yield folder
    from keras_pf._compat import keras_hub as _compat

    _compat.BUILTIN_PRESETS.pop(PRESET, None)


def headless_logits(task, x):
    task_without_preprocessing = keras.Model(task.input, task.output)
    return np.asarray(task_without_preprocessing(x))


def test_named_preset_downloads_converts_once_then_loads_from_the_cache(server, pointer_preset, cache):
    case = ParityCase(CASE)
    register_test_entry(server.url + "/checkpoint.pth")
    task = keras_hub.models.ImageClassifier.from_preset(PRESET)
    assert type(task).__name__ == "PFResNetImageClassifier"
    assert server.requests["/checkpoint.pth"] == 1
    # the original PyTorch code's logits: backbone and head both got the weights
    np.testing.assert_allclose(headless_logits(task, case.input_nhwc), case.logits, rtol=0, atol=1e-4)
    server.close()
    backbone = keras_hub.models.Backbone.from_preset(PRESET)  # from the cache, no server
    np.testing.assert_allclose(np.asarray(backbone(case.input_nhwc)),
                               np.asarray(task.backbone(case.input_nhwc)), atol=1e-6)


def test_load_weights_false_downloads_nothing(server, pointer_preset, cache):
    register_test_entry(server.url + "/checkpoint.pth")
    task = keras_hub.models.ImageClassifier.from_preset(PRESET, load_weights=False)
    backbone = keras_hub.models.Backbone.from_preset(PRESET, load_weights=False)
    assert type(backbone).__name__ == "PFResNetBackbone" and task.num_classes == 10
    assert sum(server.requests.values()) == 0 and cache_files(cache) == []


def test_named_preset_uses_the_mirror(server, pointer_preset, cache, tmp_path, monkeypatch):
    case = ParityCase(CASE)
    converted = build_case_model(weights=str(case.checkpoint))
    path = str(tmp_path / "converted.weights.h5")
    converted.save_weights(path)
    data = open(path, "rb").read()
    server.files["/mirror/" + f"{WEIGHTS_ID}_{TAG}.weights.h5"] = data
    register_test_entry(server.url + "/never.pth", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setenv(registry.MIRROR_ENV, server.url + "/mirror")
    task = keras_hub.models.ImageClassifier.from_preset(PRESET)
    assert server.requests[f"/mirror/{WEIGHTS_ID}_{TAG}.weights.h5"] == 1
    assert server.requests["/never.pth"] == 0
    np.testing.assert_allclose(headless_logits(task, case.input_nhwc), case.logits, rtol=0, atol=1e-4)


def test_named_preset_download_errors_are_keras_pfs(server, pointer_preset, cache):
    from keras_pf.weights.download import WeightsDownloadError

    server.mode = "refuse"
    register_test_entry(server.url + "/checkpoint.pth")
    with pytest.raises(WeightsDownloadError) as error:
        keras_hub.models.Backbone.from_preset(PRESET)
    assert "HTTP 403" in str(error.value) and f"--model {WEIGHTS_ID} --tag {TAG}" in str(error.value)
    assert cache_files(cache) == []


def test_classifier_gives_the_keras_pf_pipelines_logits_on_a_raw_image(server, pointer_preset, cache):
    """The preset's preprocessor is the weights' evaluation transform: a raw image of
    another size and aspect gives the logits of eval_transform + preprocess_input +
    the keras_pf classifier."""
    from keras_pf.training.data import eval_transform

    register_test_entry(server.url + "/checkpoint.pth")
    task = keras_hub.models.ImageClassifier.from_preset(PRESET)
    model = build_case_model(weights=str(ParityCase(CASE).checkpoint))
    rng = np.random.RandomState(3)
    raw = [rng.randint(0, 256, (97, 75, 3)).astype("uint8"), rng.randint(0, 256, (64, 130, 3)).astype("uint8")]
    expected = np.concatenate([np.asarray(model(keras_pf.preprocess_input(
        np.asarray(eval_transform(image, **TRANSFORM))[None]))) for image in raw])
    np.testing.assert_allclose(task.predict(raw[0][None], verbose=0)[0], expected[0], atol=1e-4)
    # the other image through the same layers, eagerly (a second predict() retraces, ~1.5 s)
    np.testing.assert_allclose(headless_logits(task, task.preprocessor.image_converter(raw[1][None]))[0],
                               expected[1], atol=1e-4)
    np.testing.assert_allclose(np.asarray(task.preprocessor.image_converter(raw)),
                               keras_pf.preprocess_input(np.stack([np.asarray(eval_transform(i, **TRANSFORM))
                                                                   for i in raw])), atol=1e-5)
    # and it matters: keras-hub's plain resize (crop to aspect, no 0.875 crop) differs
    plain = keras_hub.layers.ImageConverter(image_size=(SIZE, SIZE), scale=task.preprocessor.image_converter.scale,
                                            offset=task.preprocessor.image_converter.offset)
    assert np.abs(np.asarray(plain(raw[0][None])) - np.asarray(task.preprocessor.image_converter(raw[0][None]))).max() > 0.1


ROUND_TRIP_CHILD = """
import json, sys, numpy as np, keras, keras_hub
import keras_pf.hub
root = sys.argv[1] if len(sys.argv) > 1 else {root!r}
x = np.load(root + "/x.npy")
out = {{}}
for name, kind in json.load(open(root + "/index.json")).items():
    cls = {{"backbone": keras_hub.models.Backbone, "classifier": keras_hub.models.ImageClassifier,
           "detector": keras_hub.models.ObjectDetector, "segmenter": keras_hub.models.ImageSegmenter}}[kind]
    model = cls.from_preset(root + "/" + name)
    if kind == "backbone":
        value = model(x)
    elif kind == "detector":
        value = model.predict(x, verbose=0)["boxes"]
    else:
        value = model.predict(x, verbose=0)
    np.save(root + "/" + name + ".out.npy", np.asarray(value))
    out[name] = type(model).__name__
print(json.dumps(out))
"""


def _detector():
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=keras_hub.models.RetinaNetBackbone(image_encoder=tiny_backbone("pit"), min_level=3,
                                                    max_level=7, use_p5=False, image_shape=(SIZE, SIZE, 3)),
        num_classes=3, bounding_box_format="yxyx")


def _segmenter():
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=keras_hub.models.DeepLabV3Backbone(
            image_encoder=tiny_backbone("vit"), spatial_pyramid_pooling_key="P5", dilation_rates=[1, 2],
            upsampling_size=8, low_level_feature_key="P2", image_shape=(SIZE, SIZE, 3)), num_classes=3)


# name -> (kind, builder, what it computes)
ROUND_TRIP_MODELS = {
    **{f"{f}_backbone": ("backbone", lambda f=f: tiny_backbone(f)) for f in FAMILIES},
    **{f"{f}_classifier": ("classifier", lambda f=f: presets.build_classifier(tiny_backbone(f), TRANSFORM,
                                                                                num_classes=5))
       for f in FAMILIES},
    "detector": ("detector", _detector),
    "segmenter": ("segmenter", _segmenter),
}


@pytest.mark.parametrize("names", [
    ("resnet_backbone",),  # the default tier: one new interpreter costs ~8 s on 2 cores
    pytest.param(("vit_backbone", "pit_backbone", "resnet_classifier", "vit_classifier", "pit_classifier",
                  "detector", "segmenter"), marks=pytest.mark.slow),
], ids=["one-backbone", "every-model"])
def test_presets_round_trip_in_a_new_process(tmp_path, names):
    """Every backbone, the classifiers (preprocessor included), and keras-hub's
    RetinaNet and DeepLabV3 on a PF backbone: save_to_preset here, from_preset in a new
    interpreter, the same outputs."""
    root = str(tmp_path)
    x = images(2)
    np.save(f"{root}/x.npy", x)
    index, expected = {}, {}
    for name in names:
        kind, build = ROUND_TRIP_MODELS[name]
        model = build()
        model.save_to_preset(f"{root}/{name}")
        index[name] = kind
        if kind == "backbone":
            expected[name] = model(x)
        elif kind == "detector":
            expected[name] = model.predict(x, verbose=0)["boxes"]
        else:
            expected[name] = model.predict(x, verbose=0)
    with open(f"{root}/index.json", "w") as f:
        json.dump(index, f)
    result = run_python(ROUND_TRIP_CHILD.format(root=root))
    assert result.returncode == 0, result.stderr[-3000:]
    classes = json.loads(result.stdout.strip().splitlines()[-1])
    wanted = {"detector": "RetinaNetObjectDetector", "segmenter": "DeepLabV3ImageSegmenter",
              "resnet_classifier": "PFResNetImageClassifier", "vit_classifier": "PFViTImageClassifier",
              "pit_classifier": "PFPiTImageClassifier", "resnet_backbone": "PFResNetBackbone",
              "vit_backbone": "PFViTBackbone", "pit_backbone": "PFPiTBackbone"}
    assert classes == {name: wanted[name] for name in names}
    for name, value in expected.items():
        np.testing.assert_allclose(np.load(f"{root}/{name}.out.npy"), np.asarray(value), atol=1e-5, err_msg=name)


# --- the named presets -----------------------------------------------------------------

def test_every_registry_entry_has_a_named_preset_pointing_to_it():
    names = set(keras_hub.models.Backbone.presets)
    classifier_names = set(keras_hub.models.ImageClassifier.presets)
    expected = {}
    for weights_id, tag, is_imagenet, _ in registry.entries():
        if not isinstance(registry.WEIGHTS[weights_id]["model"], str):
            continue
        expected[f"{weights_id}_{tag}"] = (weights_id, tag)
        if is_imagenet:
            expected[f"{weights_id}_imagenet"] = (weights_id, "imagenet")
    assert {"pf_resnet50_hybrid_imagenet", "pf_resnet50_max_imagenet", "pf_vit_small_imagenet",
            "pf_pit_small_imagenet", "pf_resnet50_hybrid_paper"} <= set(expected)
    for name, (weights_id, tag) in expected.items():
        assert name in names and name in classifier_names, name
        folder = keras_pf._compat.keras_hub.BUILTIN_PRESETS[name]["kaggle_handle"]
        for weights_file in ("model.weights.h5", "task.weights.h5"):
            record = read_pointer(os.path.join(folder, weights_file))
            assert (record["weights_id"], record["tag"]) == (weights_id, tag), name
    for model in ("PFResNet50Plain", "PFViTTiny", "PFViTBase", "PFPiTTiny", "PFPiTBase"):  # no weights published
        weights_id = getattr(keras_pf, model).weights_id
        assert weights_id in names
        folder = keras_pf._compat.keras_hub.BUILTIN_PRESETS[weights_id]["kaggle_handle"]
        assert read_pointer(os.path.join(folder, "model.weights.h5"))["weights_id"] is None


def test_named_presets_build_without_any_download(cache):
    backbone = keras_hub.models.Backbone.from_preset("pf_pit_tiny", load_weights=False)
    assert type(backbone).__name__ == "PFPiTBackbone" and backbone.count_params() == \
        keras_pf.PFPiTTiny(include_top=False, weights=None).count_params()
    task = keras_hub.models.ImageClassifier.from_preset("pf_vit_small_imagenet", load_weights=False)
    converter = task.preprocessor.image_converter
    assert (converter.image_size, converter.crop_ratio, converter.interpolation) == ((224, 224), 0.875, "bicubic")
    assert task.num_classes == 1000 and cache_files(cache) == []
    with pytest.raises(keras_pf.hub.PresetError, match="architecture-only preset"):
        keras_hub.models.Backbone.from_preset("pf_pit_tiny")


def _preset_files(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".json"):
            value = json.load(open(path))
            if name == "metadata.json":
                value.pop("keras_version", None), value.pop("keras_hub_version", None)
            out[name] = value
        else:
            out[name] = read_pointer(path)
    return out


@pytest.mark.parametrize("name", [
    "pf_pit_tiny",
    *[pytest.param(n, marks=pytest.mark.slow) for n in sorted(presets.builtin_table()) if n != "pf_pit_tiny"],
])
def test_shipped_preset_folders_are_what_the_registry_gives(name, tmp_path):
    """keras_pf/hub/builtin_presets is written by tools/write_hub_presets.py: if the
    registry or a config changed, this fails until the tool is run again."""
    written = presets.write_builtin_preset(name, root=str(tmp_path))
    shipped = os.path.join(presets.BUILTIN_DIR, name)
    assert _preset_files(written) == _preset_files(shipped)


@pytest.mark.slow
def test_full_size_named_preset_gives_the_keras_pf_classifiers_logits(cache):
    """pf_resnet50_max_imagenet, its weights put in the cache (random: no machine here
    reaches Drive), against keras_pf.PFResNet50Max(weights="imagenet") on one image."""
    from keras_pf.training.data import eval_transform

    from keras_pf.weights import cache as cache_module

    source = keras_pf.PFResNet50Max(weights=None, classifier_activation=None)
    os.makedirs(os.path.dirname(cache_module.weights_path("pf_resnet50_max", "long")), exist_ok=True)
    source.save_weights(cache_module.weights_path("pf_resnet50_max", "long"))
    task = keras_hub.models.ImageClassifier.from_preset("pf_resnet50_max_imagenet")
    model = keras_pf.PFResNet50Max(weights="imagenet", classifier_activation=None)
    image = np.random.RandomState(5).randint(0, 256, (300, 257, 3)).astype("uint8")
    expected = model(keras_pf.preprocess_input(np.asarray(eval_transform(image, 224, 0.875, "bilinear"))[None]))
    np.testing.assert_allclose(task.predict(image[None], verbose=0), np.asarray(expected), atol=1e-4)
