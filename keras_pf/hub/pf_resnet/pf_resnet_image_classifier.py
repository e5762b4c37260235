"""keras-hub's `ImageClassifier` on a PFResNet backbone."""

import keras

from keras_pf.hub.image_classifier import PFImageClassifier
from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone
from keras_pf.hub.pf_resnet.pf_resnet_image_classifier_preprocessor import (
    PFResNetImageClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_pf")
class PFResNetImageClassifier(PFImageClassifier):
    """`PFImageClassifier` (keras-hub's `ImageClassifier`) on a `PFResNetBackbone`."""

    backbone_cls = PFResNetBackbone
    preprocessor_cls = PFResNetImageClassifierPreprocessor
