"""PF-ResNet (R50, R50-max, R50-hybrid) as a keras-hub `FeaturePyramidBackbone`."""

import keras

from keras_pf.models import pf_resnet, transfer
from keras_pf.hub.backbone import PFBackbone, dtype_policy


@keras.saving.register_keras_serializable(package="keras_pf")
class PFResNetBackbone(PFBackbone):
    """The ResNet family of "Learning Features with Parameter-Free Layers" (Han et al.,
    ICLR 2022) as a keras-hub backbone, built by `keras_pf.PFResNet`.

    The output is the last stage's feature map (as `keras_pf.PFResNet(include_top=False)`,
    and `ImageClassifier` pools it). `pyramid_outputs`: `"P2"`..`"P5"`, the outputs of the
    last block of each stage (`conv2_block3_out` ... `conv5_block3_out`), at strides 4,
    8, 16, 32; `"P5"` is the output.

    Args:
        block: `"plain"`, `"max"` or `"hybrid"`, or one kind per stage (see
            `keras_pf.PFResNet`).
        depths: bottlenecks per stage.
        width_mult: multiplier of the inner widths.
        image_shape: `(height, width, 3)`; `None` sides for any size (R50-hybrid:
            multiples of 32).
        dtype: the dtype policy to build under.

    Example:
    ```python
    import keras_pf.hub, keras_hub
    backbone = keras_hub.models.Backbone.from_preset("pf_resnet50_hybrid_imagenet")
    detector_backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=backbone, min_level=3, max_level=7, use_p5=False)
    ```
    """

    config_names = ("block", "depths", "width_mult")

    def __init__(self, block="hybrid", depths=(3, 4, 6, 3), width_mult=1.0,
                 image_shape=(None, None, 3), dtype=None, name="pf_resnet_backbone", **kwargs):
        block = block if isinstance(block, str) else tuple(block)
        with dtype_policy(dtype):
            network = pf_resnet.PFResNet(block=block, depths=tuple(depths), width_mult=width_mult,
                                         include_top=False, weights=None,
                                         input_shape=tuple(image_shape))
        pyramid = {f"P{stride.bit_length() - 1}": network.get_layer(layer).output
                   for layer, stride in transfer.feature_layers(network)}
        super().__init__(network, pyramid, image_shape, dtype=dtype, name=name, **kwargs)
        self.block, self.depths, self.width_mult = block, tuple(depths), width_mult
