"""The image classifier preprocessor of PFResNet presets."""

import keras
from keras_hub.models import ImageClassifierPreprocessor

from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone
from keras_pf.hub.pf_resnet.pf_resnet_image_converter import PFResNetImageConverter
from keras_pf.hub.preset_checks import checked_from_preset


@keras.saving.register_keras_serializable(package="keras_pf")
class PFResNetImageClassifierPreprocessor(ImageClassifierPreprocessor):
    backbone_cls = PFResNetBackbone
    image_converter_cls = PFResNetImageConverter

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return checked_from_preset(super().from_preset, cls, preset, **kwargs)
