"""The image classifier preprocessor of PFViT presets."""

import keras

from keras_pf.hub.image_classifier import PFImageClassifierPreprocessor
from keras_pf.hub.pf_vit.pf_vit_backbone import PFViTBackbone
from keras_pf.hub.pf_vit.pf_vit_image_converter import PFViTImageConverter


@keras.saving.register_keras_serializable(package="keras_pf")
class PFViTImageClassifierPreprocessor(PFImageClassifierPreprocessor):
    backbone_cls = PFViTBackbone
    image_converter_cls = PFViTImageConverter
