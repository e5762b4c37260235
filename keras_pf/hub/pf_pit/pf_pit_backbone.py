"""PF-PiT (PiT-max) as a keras-hub `FeaturePyramidBackbone`."""

import math

import keras

from keras_pf.models import pf_pit, transfer
from keras_pf.hub.backbone import PFBackbone, dtype_policy
from keras_pf.hub.layers import HalfCellResample


@keras.saving.register_keras_serializable(package="keras_pf")
class PFPiTBackbone(PFBackbone):
    """PiT-max of "Learning Features with Parameter-Free Layers" (Han et al., ICLR 2022)
    as a keras-hub backbone, built by `keras_pf.PFPiT`.

    The output is the final-normalized token grid of the last stage, as
    `keras_pf.PFPiT(include_top=False)`. `pyramid_outputs`, one level per stage:
    `"P5"` the output, `"P4"` the last block of the middle stage (both exactly the
    network's maps), `"P3"` the last block of the first stage resampled half a cell
    (`HalfCellResample`): the unpadded stride-8 patch embedding gives one token fewer
    than the stride-8 grid (27 at 224, 7 at 64), and the stride-8 grid that the second
    stage halves lies half a token off. PiT-Ti/S run at strides 8/16/32; PiT-B's patch
    stride is 7, so its levels are at 7/14/28 pixels (keyed P3-P5 all the same).

    Args:
        base_dims, depths, heads, patch_size, stride, mlp_ratio: as `keras_pf.PFPiT`.
        image_shape: `(height, width, 3)`, fixed; sides that are multiples of 32 make
            every level exactly half the one before.
        dtype: the dtype policy to build under.
    """

    config_names = ("base_dims", "depths", "heads", "patch_size", "stride", "mlp_ratio")

    def __init__(self, base_dims=(48, 48, 48), depths=(2, 6, 4), heads=(3, 6, 12), patch_size=16,
                 stride=8, mlp_ratio=4.0, image_shape=(224, 224, 3), dtype=None,
                 name="pf_pit_backbone", **kwargs):
        with dtype_policy(dtype):
            network = pf_pit.PFPiT(base_dims=tuple(base_dims), depths=tuple(depths),
                                   heads=tuple(heads), patch_size=patch_size, stride=stride,
                                   mlp_ratio=mlp_ratio, include_top=False, weights=None,
                                   input_shape=tuple(image_shape))
            stages = [network.get_layer(layer).output for layer, _ in transfer.feature_layers(network)]
            stages[-1] = network.output  # the last stage after the final norm: the output
            if len(stages) > 1:  # the first stage, on the grid the second one halves
                size = (2 * stages[1].shape[1], 2 * stages[1].shape[2])
                stages[0] = HalfCellResample(size, name="pyramid_first_stage")(stages[0])
            level = max(1, round(math.log2(stride)))  # stride 8 (7 for PiT-B): P3
            pyramid = {f"P{level + s}": x for s, x in enumerate(stages)}
        super().__init__(network, pyramid, image_shape, dtype=dtype, name=name, **kwargs)
        self.base_dims, self.depths, self.heads = tuple(base_dims), tuple(depths), tuple(heads)
        self.patch_size, self.stride, self.mlp_ratio = patch_size, stride, mlp_ratio
