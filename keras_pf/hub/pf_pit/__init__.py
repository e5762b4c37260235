from keras_pf._compat.keras_hub import register_presets
from keras_pf.hub.pf_pit.pf_pit_backbone import PFPiTBackbone
from keras_pf.hub.pf_pit.pf_pit_image_classifier import PFPiTImageClassifier
from keras_pf.hub.pf_pit.pf_pit_image_classifier_preprocessor import (
    PFPiTImageClassifierPreprocessor,
)
from keras_pf.hub.pf_pit.pf_pit_image_converter import PFPiTImageConverter
from keras_pf.hub.pf_pit.pf_pit_presets import backbone_presets

register_presets(backbone_presets, PFPiTBackbone)

__all__ = ["PFPiTBackbone", "PFPiTImageClassifier", "PFPiTImageClassifierPreprocessor",
           "PFPiTImageConverter"]
