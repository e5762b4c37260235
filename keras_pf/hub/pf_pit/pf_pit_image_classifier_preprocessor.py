"""The image classifier preprocessor of PFPiT presets."""

import keras
from keras_hub.models import ImageClassifierPreprocessor

from keras_pf.hub.pf_pit.pf_pit_backbone import PFPiTBackbone
from keras_pf.hub.pf_pit.pf_pit_image_converter import PFPiTImageConverter
from keras_pf.hub.preset_checks import checked_from_preset


@keras.saving.register_keras_serializable(package="keras_pf")
class PFPiTImageClassifierPreprocessor(ImageClassifierPreprocessor):
    backbone_cls = PFPiTBackbone
    image_converter_cls = PFPiTImageConverter

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return checked_from_preset(super().from_preset, cls, preset, **kwargs)
