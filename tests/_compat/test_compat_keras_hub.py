"""The private keras-hub API of keras_pf/_compat/keras_hub.py still exists and behaves as
keras_pf.hub uses it (a keras-hub upgrade that changes it fails here first)."""

import os

import pytest

keras_hub = pytest.importorskip("keras_hub")

from keras_pf._compat import keras_hub as _compat  # noqa: E402


def tiny_backbone(family):
    import keras_pf.hub

    if family == "vit":
        return keras_pf.hub.PFViTBackbone(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, image_shape=(64, 64, 3))
    return keras_pf.hub.PFResNetBackbone(block="max", depths=(1, 1, 1, 1), width_mult=0.25, image_shape=(64, 64, 3))


def test_registered_presets_load_by_name_and_are_listed(tmp_path):
    backbone = tiny_backbone("vit")
    folder = str(tmp_path / "p")
    backbone.save_to_preset(folder)
    assert {_compat.CONFIG_FILE, _compat.MODEL_WEIGHTS_FILE, _compat.METADATA_FILE} <= set(os.listdir(folder))
    _compat.register_presets({"test_compat_preset": {"metadata": {"description": "x", "params": 1},
                                                     "kaggle_handle": folder}}, type(backbone))
    try:
        assert "test_compat_preset" in type(backbone).presets
        assert "test_compat_preset" in keras_hub.models.Backbone.presets
        assert _compat.BUILTIN_PRESETS["test_compat_preset"]["kaggle_handle"] == folder
        loaded = keras_hub.models.Backbone.from_preset("test_compat_preset")
        assert type(loaded) is type(backbone)
    finally:
        _compat.BUILTIN_PRESETS.pop("test_compat_preset")


def test_upload_check_refuses_a_folder_without_weights(tmp_path):
    folder = str(tmp_path / "p")
    tiny_backbone("resnet").save_to_preset(folder)
    _compat.preset_folder_is_uploadable(folder)
    os.remove(os.path.join(folder, _compat.MODEL_WEIGHTS_FILE))
    with pytest.raises(FileNotFoundError):
        _compat.preset_folder_is_uploadable(folder)
    assert {_compat.TASK_CONFIG_FILE, _compat.TASK_WEIGHTS_FILE, _compat.PREPROCESSOR_CONFIG_FILE,
            _compat.IMAGE_CONVERTER_CONFIG_FILE, _compat.SHARDED_MODEL_WEIGHTS_CONFIG_FILE} == \
        {"task.json", "task.weights.h5", "preprocessor.json", "image_converter.json", "model.weights.json"}
