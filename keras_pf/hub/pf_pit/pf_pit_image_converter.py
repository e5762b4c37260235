"""The image converter of PFPiT presets: keras_pf's evaluation transform."""

import keras

from keras_pf.hub.image_converter import PFImageConverter
from keras_pf.hub.pf_pit.pf_pit_backbone import PFPiTBackbone


@keras.saving.register_keras_serializable(package="keras_pf")
class PFPiTImageConverter(PFImageConverter):
    backbone_cls = PFPiTBackbone
