"""The image classifier preprocessor of PFResNet presets."""

import keras

from keras_pf.hub.image_classifier import PFImageClassifierPreprocessor
from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone
from keras_pf.hub.pf_resnet.pf_resnet_image_converter import PFResNetImageConverter


@keras.saving.register_keras_serializable(package="keras_pf")
class PFResNetImageClassifierPreprocessor(PFImageClassifierPreprocessor):
    backbone_cls = PFResNetBackbone
    image_converter_cls = PFResNetImageConverter
