"""keras-hub's `ImageClassifier` on a PFPiT backbone."""

import keras

from keras_pf.hub.image_classifier import PFImageClassifier
from keras_pf.hub.pf_pit.pf_pit_backbone import PFPiTBackbone
from keras_pf.hub.pf_pit.pf_pit_image_classifier_preprocessor import (
    PFPiTImageClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_pf")
class PFPiTImageClassifier(PFImageClassifier):
    """`PFImageClassifier` (keras-hub's `ImageClassifier`) on a `PFPiTBackbone`."""

    backbone_cls = PFPiTBackbone
    preprocessor_cls = PFPiTImageClassifierPreprocessor
