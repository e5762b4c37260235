"""keras-hub's `ImageClassifier` on a PFResNet backbone."""

import keras
from keras_hub.models import ImageClassifier

from keras_pf.hub import weights as hub_weights
from keras_pf.hub.pf_resnet.pf_resnet_backbone import PFResNetBackbone
from keras_pf.hub.pf_resnet.pf_resnet_image_classifier_preprocessor import (
    PFResNetImageClassifierPreprocessor,
)
from keras_pf.hub.preset_checks import checked_from_preset


@keras.saving.register_keras_serializable(package="keras_pf")
class PFResNetImageClassifier(ImageClassifier):
    """`keras_hub.models.ImageClassifier` (average pooling, a Dense head named
    "predictions") on a `PFResNetBackbone`: with the same weights, the same logits as the
    keras_pf classifier (`classifier_activation=None`), whose head is the same average
    pool and Dense. A preset's preprocessor applies the weights' evaluation transform."""

    backbone_cls = PFResNetBackbone
    preprocessor_cls = PFResNetImageClassifierPreprocessor

    def load_task_weights(self, filepath):
        """The head's weights: a keras-hub task weights file, or the registry weights a
        keras_pf pointer names."""
        return hub_weights.load_classifier_head(self, filepath, super().load_task_weights)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        return checked_from_preset(super().from_preset, cls, preset, load_weights=load_weights,
                                   **kwargs)
