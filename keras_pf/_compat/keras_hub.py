"""The private keras-hub API keras_pf.hub relies on, in one place (written for keras-hub
0.32.0; imported only by keras_pf.hub, so only with keras-hub installed).

keras-hub has no public way for another package to add named presets: its own model
folders call `register_presets` (`keras_hub.src.utils.preset_utils`), which fills the
table `from_preset(name)` looks names up in. keras_pf.hub does the same for its presets.
`tests/_compat/test_compat_keras_hub.py` checks each name here still exists and behaves as used.
"""

from keras_hub.src.utils import preset_utils

#: name -> {"metadata": ..., "kaggle_handle": where the preset lives}, what
#: `from_preset(name)` resolves a built-in preset name through
BUILTIN_PRESETS = preset_utils.BUILTIN_PRESETS

#: keras-hub's own file names inside a preset folder
CONFIG_FILE = preset_utils.CONFIG_FILE
TASK_CONFIG_FILE = preset_utils.TASK_CONFIG_FILE
PREPROCESSOR_CONFIG_FILE = preset_utils.PREPROCESSOR_CONFIG_FILE
IMAGE_CONVERTER_CONFIG_FILE = preset_utils.IMAGE_CONVERTER_CONFIG_FILE
METADATA_FILE = preset_utils.METADATA_FILE
MODEL_WEIGHTS_FILE = preset_utils.MODEL_WEIGHTS_FILE
TASK_WEIGHTS_FILE = preset_utils.TASK_WEIGHTS_FILE
SHARDED_MODEL_WEIGHTS_CONFIG_FILE = preset_utils.SHARDED_MODEL_WEIGHTS_CONFIG_FILE


def register_presets(presets, backbone_cls):
    """Make `presets` ({name: {"metadata", "kaggle_handle"}}) loadable by name with
    `from_preset`, and listed in `backbone_cls.presets` (and its tasks')."""
    preset_utils.register_presets(presets, backbone_cls)


def preset_folder_is_uploadable(folder):
    """Raise as `keras_hub.upload_preset` does before uploading, if `folder` lacks what
    an upload needs (config.json, valid JSON, the weights)."""
    preset_utils._validate_backbone(folder)
