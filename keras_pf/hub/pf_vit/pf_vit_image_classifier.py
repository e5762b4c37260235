"""keras-hub's `ImageClassifier` on a PFViT backbone."""

import keras

from keras_pf.hub.image_classifier import PFImageClassifier
from keras_pf.hub.pf_vit.pf_vit_backbone import PFViTBackbone
from keras_pf.hub.pf_vit.pf_vit_image_classifier_preprocessor import (
    PFViTImageClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_pf")
class PFViTImageClassifier(PFImageClassifier):
    """`PFImageClassifier` (keras-hub's `ImageClassifier`) on a `PFViTBackbone`."""

    backbone_cls = PFViTBackbone
    preprocessor_cls = PFViTImageClassifierPreprocessor
