"""The image converter of PFResNet presets: keras_pf's evaluation transform."""

import keras

from keras_pf.hub.image_converter import PFImageConverter
from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone


@keras.saving.register_keras_serializable(package="keras_pf")
class PFResNetImageConverter(PFImageConverter):
    backbone_cls = PFResNetBackbone
