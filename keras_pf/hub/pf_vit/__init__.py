from keras_pf._compat.keras_hub import register_presets
from keras_pf.hub.pf_vit.pf_vit_backbone import PFViTBackbone
from keras_pf.hub.pf_vit.pf_vit_image_classifier import PFViTImageClassifier
from keras_pf.hub.pf_vit.pf_vit_image_classifier_preprocessor import (
    PFViTImageClassifierPreprocessor,
)
from keras_pf.hub.pf_vit.pf_vit_image_converter import PFViTImageConverter
from keras_pf.hub.pf_vit.pf_vit_presets import backbone_presets

register_presets(backbone_presets, PFViTBackbone)

__all__ = ["PFViTBackbone", "PFViTImageClassifier", "PFViTImageClassifierPreprocessor",
           "PFViTImageConverter"]
