from keras_pf._compat.keras_hub import register_presets
from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone
from keras_pf.hub.pf_resnet.pf_resnet_image_classifier import PFResNetImageClassifier
from keras_pf.hub.pf_resnet.pf_resnet_image_classifier_preprocessor import (
    PFResNetImageClassifierPreprocessor,
)
from keras_pf.hub.pf_resnet.pf_resnet_image_converter import PFResNetImageConverter
from keras_pf.hub.pf_resnet.pf_resnet_presets import backbone_presets

register_presets(backbone_presets, PFResNetBackbone)

__all__ = ["PFResNetBackbone", "PFResNetImageClassifier", "PFResNetImageClassifierPreprocessor",
           "PFResNetImageConverter"]
