"""The image classifier preprocessor of PFPiT presets."""

import keras

from keras_pf.hub.image_classifier import PFImageClassifierPreprocessor
from keras_pf.hub.pf_pit.pf_pit_backbone import PFPiTBackbone
from keras_pf.hub.pf_pit.pf_pit_image_converter import PFPiTImageConverter


@keras.saving.register_keras_serializable(package="keras_pf")
class PFPiTImageClassifierPreprocessor(PFImageClassifierPreprocessor):
    backbone_cls = PFPiTBackbone
    image_converter_cls = PFPiTImageConverter
