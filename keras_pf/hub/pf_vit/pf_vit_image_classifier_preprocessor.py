"""The image classifier preprocessor of PFViT presets."""

import keras
from keras_hub.models import ImageClassifierPreprocessor

from keras_pf.hub.pf_vit.pf_vit_backbone import PFViTBackbone
from keras_pf.hub.pf_vit.pf_vit_image_converter import PFViTImageConverter
from keras_pf.hub.preset_checks import checked_from_preset


@keras.saving.register_keras_serializable(package="keras_pf")
class PFViTImageClassifierPreprocessor(ImageClassifierPreprocessor):
    backbone_cls = PFViTBackbone
    image_converter_cls = PFViTImageConverter

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return checked_from_preset(super().from_preset, cls, preset, **kwargs)
