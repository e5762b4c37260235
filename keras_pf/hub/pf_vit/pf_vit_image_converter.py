"""The image converter of PFViT presets: keras_pf's evaluation transform."""

import keras

from keras_pf.hub.image_converter import PFImageConverter
from keras_pf.hub.pf_vit.pf_vit_backbone import PFViTBackbone


@keras.saving.register_keras_serializable(package="keras_pf")
class PFViTImageConverter(PFImageConverter):
    backbone_cls = PFViTBackbone
