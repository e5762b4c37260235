"""keras_pf's networks as keras-hub models: backbones, presets and tasks.

    pip install "keras_pf[hub]"

```python
import keras_hub
import keras_pf.hub  # registers the classes and the named presets

backbone = keras_hub.models.Backbone.from_preset("pf_resnet50_hybrid_imagenet")
classifier = keras_hub.models.ImageClassifier.from_preset("pf_resnet50_hybrid_imagenet")
detector = keras_hub.models.RetinaNetObjectDetector(
    backbone=keras_hub.models.RetinaNetBackbone(
        image_encoder=backbone, min_level=3, max_level=7, use_p5=False),
    num_classes=3)
```

- Backbones: `PFResNetBackbone`, `PFViTBackbone`, `PFPiTBackbone`, keras-hub
  `FeaturePyramidBackbone`s built by keras_pf's own builders (same layers, names and
  weights as `keras_pf.PFResNet(include_top=False)` & co.), with `pyramid_outputs`
  P2-P5 (ResNet, ViT's simple pyramid) or P3-P5 (PiT).
- Tasks: `PF*ImageClassifier` (keras-hub's `ImageClassifier`), with
  `PF*ImageClassifierPreprocessor` / `PF*ImageConverter` applying the weights'
  evaluation transform. Any keras-hub task that takes a `FeaturePyramidBackbone`
  (`RetinaNetObjectDetector`, `DeepLabV3ImageSegmenter`) takes these backbones.
- Presets: `save_to_preset` / `from_preset` as for any keras-hub model; the named
  presets of `keras_pf.hub.presets` resolve their weights through keras_pf's registry.
"""

try:
    import keras_hub  # noqa: F401
except ImportError as error:
    if getattr(error, "name", None) not in ("keras_hub", None):
        raise
    raise ImportError('keras_pf.hub needs keras-hub, which is not installed: pip install "keras_pf[hub]"') from None

from keras_pf.hub.layers import HalfCellResample  # noqa: E402
from keras_pf.hub.pf_pit import (  # noqa: E402
    PFPiTBackbone,
    PFPiTImageClassifier,
    PFPiTImageClassifierPreprocessor,
    PFPiTImageConverter,
)
from keras_pf.hub.pf_resnet import (  # noqa: E402
    PFResNetBackbone,
    PFResNetImageClassifier,
    PFResNetImageClassifierPreprocessor,
    PFResNetImageConverter,
)
from keras_pf.hub.pf_vit import (  # noqa: E402
    PFViTBackbone,
    PFViTImageClassifier,
    PFViTImageClassifierPreprocessor,
    PFViTImageConverter,
)
from keras_pf.hub.presets import register_preset, write_pointer_preset  # noqa: E402
from keras_pf.hub.weights import PresetError  # noqa: E402

__all__ = [
    "HalfCellResample",
    "PFPiTBackbone", "PFPiTImageClassifier", "PFPiTImageClassifierPreprocessor", "PFPiTImageConverter",
    "PFResNetBackbone", "PFResNetImageClassifier", "PFResNetImageClassifierPreprocessor",
    "PFResNetImageConverter",
    "PFViTBackbone", "PFViTImageClassifier", "PFViTImageClassifierPreprocessor", "PFViTImageConverter",
    "PresetError", "register_preset", "write_pointer_preset",
]
