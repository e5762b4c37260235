"""What the families' keras-hub `ImageClassifier`s and their preprocessors share: the
head's weights from a keras-hub task file or a keras_pf registry pointer, and the
preset checks.

Not registered for serialization itself: keras-hub finds a task class among the
registered subclasses whose `backbone_cls` is the preset's backbone, which each
family's subclass sets."""

from keras_hub.models import ImageClassifier, ImageClassifierPreprocessor

from keras_pf.hub import weights as hub_weights
from keras_pf.hub.preset_checks import checked_from_preset


class PFImageClassifier(ImageClassifier):
    """`keras_hub.models.ImageClassifier` (average pooling, a Dense head named
    "predictions") on a keras_pf backbone: with the same weights, the same logits as the
    keras_pf classifier (`classifier_activation=None`), whose head is the same average
    pool and Dense. A preset's preprocessor applies the weights' evaluation transform."""

    def load_task_weights(self, filepath):
        """The head's weights: a keras-hub task weights file, or the registry weights a
        keras_pf pointer names."""
        return hub_weights.load_classifier_head(self, filepath, super().load_task_weights)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        return checked_from_preset(super().from_preset, cls, preset, load_weights=load_weights,
                                   **kwargs)


class PFImageClassifierPreprocessor(ImageClassifierPreprocessor):
    """keras-hub's `ImageClassifierPreprocessor` whose `from_preset` checks the preset
    as the other keras_pf classes do; each family's subclass sets its backbone and
    image converter."""

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return checked_from_preset(super().from_preset, cls, preset, **kwargs)
