"""A preset folder is input like a checkpoint: each kind of damage gives one
PresetError line naming the folder (or name) and the problem, and nothing in it is
executed (Keras' safe_mode stays on)."""

import json
import os
import shutil

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import keras_pf.hub  # noqa: E402
from hub_helpers import SIZE, tiny_backbone  # noqa: E402
from keras_pf.hub import PresetError, presets  # noqa: E402

TRANSFORM = {"image_size": SIZE, "crop_ratio": 0.875, "interpolation": "bilinear"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny PF-ResNet classifier preset (real weights), copied fresh per test."""
    folder = str(tmp_path_factory.mktemp("good") / "preset")
    presets.build_classifier(tiny_backbone("resnet"), TRANSFORM, num_classes=5).save_to_preset(folder)
    return folder


@pytest.fixture
def preset(saved, tmp_path):
    folder = str(tmp_path / "preset")
    shutil.copytree(saved, folder)
    return folder


def one_line(error, *needles):
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def edit_json(folder, name, change):
    path = os.path.join(folder, name)
    with open(path) as f:
        config = json.load(f)
    change(config)
    with open(path, "w") as f:
        json.dump(config, f)


def test_the_good_preset_loads(preset):
    assert type(keras_pf.hub.PFResNetImageClassifier.from_preset(preset)).__name__ == "PFResNetImageClassifier"


def test_missing_config_json(preset):
    os.remove(os.path.join(preset, "config.json"))
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(preset)
    one_line(error, preset, "no config.json")


def test_config_json_that_is_not_json(preset):
    with open(os.path.join(preset, "config.json"), "a") as f:
        f.write("}{ edited")
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetImageClassifier.from_preset(preset)
    one_line(error, os.path.join(preset, "config.json"), "not valid JSON")


@pytest.mark.parametrize("change, needle", [
    (lambda c: c["config"].update(block="evil"), "block"),          # a value the builder refuses
    (lambda c: c["config"].update(blocks="max"), "blocks"),         # an argument nobody takes
    (lambda c: c["config"].update(depths="abc"), "preset"),         # a value of the wrong type
])
def test_edited_config_values(preset, change, needle):
    edit_json(preset, "config.json", change)
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(preset)
    one_line(error, preset, needle)


def test_unknown_registered_name(preset):
    edit_json(preset, "config.json", lambda c: c.update(registered_name="someone>EvilBackbone"))
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(preset)
    one_line(error, os.path.join(preset, "config.json"), "someone>EvilBackbone", "no imported package registered",
             "nothing was loaded")


def test_weights_of_another_shape(preset, tmp_path):
    other = str(tmp_path / "other")
    keras_pf.hub.PFResNetBackbone(block=("max", "hybrid", "hybrid", "max"), depths=(1, 1, 1, 1),
                                  width_mult=0.5, image_shape=(SIZE, SIZE, 3)).save_to_preset(other)
    shutil.copy(os.path.join(other, "model.weights.h5"), os.path.join(preset, "model.weights.h5"))
    for load in (keras_pf.hub.PFResNetBackbone.from_preset, keras_hub.models.Backbone.from_preset):
        with pytest.raises(ValueError) as error:
            load(preset)
        one_line(error, os.path.join(preset, "model.weights.h5"), "does not fit", "has shape")


def test_missing_weights_file(preset):
    os.remove(os.path.join(preset, "model.weights.h5"))
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(preset)
    one_line(error, preset, "no model.weights.h5", "load_weights=False")
    assert keras_pf.hub.PFResNetBackbone.from_preset(preset, load_weights=False) is not None


def test_preset_of_another_family(preset):
    for cls in (keras_pf.hub.PFViTBackbone, keras_pf.hub.PFPiTImageClassifier,
                keras_pf.hub.PFViTImageConverter, keras_pf.hub.PFPiTImageClassifierPreprocessor):
        with pytest.raises(PresetError) as error:
            cls.from_preset(preset)
        one_line(error, preset, "PFResNetBackbone", "another model family")


@pytest.mark.parametrize("name", ["pf_resnet50_hybrid_imagenett", "no/such/folder"])
def test_unknown_preset_name(name):
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(name)
    one_line(error, repr(name), "unknown preset", "pf_resnet50_hybrid_imagenet")


def test_a_file_is_not_a_preset(preset):
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(os.path.join(preset, "config.json"))
    one_line(error, "is a file, not a preset folder")


def test_code_in_a_preset_is_never_run(preset, tmp_path):
    """A task.json whose preprocessor is a Lambda (Python bytecode that would write a
    file): refused by Keras' safe_mode, through our classes and keras-hub's alike."""
    marker = str(tmp_path / "executed")
    evil = keras.layers.Lambda(lambda x: (open(marker, "w").write("!"), x)[1])  # noqa: SIM115
    payload = keras.saving.serialize_keras_object(evil)
    edit_json(preset, "task.json", lambda c: c["config"].update(preprocessor=payload))
    for load in (keras_pf.hub.PFResNetImageClassifier.from_preset, keras_hub.models.ImageClassifier.from_preset):
        with pytest.raises(ValueError, match="safe_mode") as error:
            load(preset)
        assert "\n" not in str(error.value) or load is keras_hub.models.ImageClassifier.from_preset
    assert not os.path.exists(marker)


def test_pointer_to_weights_the_registry_does_not_have(preset):
    from keras_pf.hub.weights import write_pointer

    write_pointer(os.path.join(preset, "model.weights.h5"), "pf_resnet9000", "imagenet", "PFResNet9000")
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(preset)
    one_line(error, os.path.join(preset, "model.weights.h5"), "pf_resnet9000", "registry does not have")


def test_weights_file_that_is_not_hdf5(preset):
    with open(os.path.join(preset, "model.weights.h5"), "wb") as f:
        f.write(b"\x89HDF not really" + bytes(100))
    with pytest.raises(ValueError) as error:
        keras_pf.hub.PFResNetBackbone.from_preset(preset)
    one_line(error, os.path.join(preset, "model.weights.h5"))


def test_task_weights_with_another_number_of_classes(preset, tmp_path):
    other = str(tmp_path / "other")
    presets.build_classifier(tiny_backbone("resnet"), TRANSFORM, num_classes=7).save_to_preset(other)
    shutil.copy(os.path.join(other, "task.weights.h5"), os.path.join(preset, "task.weights.h5"))
    with pytest.raises(PresetError) as error:
        keras_pf.hub.PFResNetImageClassifier.from_preset(preset)
    one_line(error, os.path.join(preset, "task.weights.h5"))
    # num_classes asks for a new head: the task weights are then not read at all
    task = keras_pf.hub.PFResNetImageClassifier.from_preset(preset, num_classes=3)
    assert task.predict(np.zeros((1, SIZE, SIZE, 3), "float32"), verbose=0).shape == (1, 3)
