"""PF-ViT (ViT-max) as a keras-hub `FeaturePyramidBackbone`, with a parameter-free
simple feature pyramid."""

import keras

from keras_pf.models import pf_vit
from keras_pf.hub.backbone import PFBackbone, dtype_policy


@keras.saving.register_keras_serializable(package="keras_pf")
class PFViTBackbone(PFBackbone):
    """ViT-max of "Learning Features with Parameter-Free Layers" (Han et al., ICLR 2022)
    as a keras-hub backbone, built by `keras_pf.PFViT`.

    The output is the final-normalized token grid `(batch, H/16, W/16, embed_dim)`, as
    `keras_pf.PFViT(include_top=False)` (no class token: `ImageClassifier`'s average
    pooling is the original head's token mean).

    `pyramid_outputs`: ViT has a single stride, so the pyramid is a *simple feature
    pyramid* from the last block, as ViTDet (Li et al., 2022) builds it, but without
    parameters, so that the backbone keeps exactly the weights of the keras_pf model:
    `"P4"` is the output grid itself (stride 16), `"P5"` its 2x2 max-pool (stride 32),
    `"P3"` and `"P2"` its bilinear 2x and 4x upsampling (strides 8 and 4; half-pixel
    centres, so each cell lies where the stride puts it). ViTDet learns
    deconvolutions for the upsampled levels; here the detector's or segmenter's own
    layers on top (RetinaNet's FPN, DeepLabV3's projections) are what learns. What it
    costs: no parameters; the upsampled maps keep `embed_dim` channels, so whatever
    runs on `"P2"` sees 16x the tokens of the output (DeepLabV3 with
    `low_level_feature_key="P2"`; RetinaNet starts at `"P3"`). Pyramid levels halve
    exactly when the token grid is even: use sides that are multiples of 32.

    Args:
        embed_dim, depth, num_heads, patch_size, mlp_ratio: as `keras_pf.PFViT`.
        image_shape: `(height, width, 3)`, fixed (the position embedding is laid on a
            fixed grid; weights for another size are resized when loaded).
        dtype: the dtype policy to build under.
    """

    config_names = ("embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio")

    def __init__(self, embed_dim=384, depth=12, num_heads=6, patch_size=16, mlp_ratio=4.0,
                 image_shape=(224, 224, 3), dtype=None, name="pf_vit_backbone", **kwargs):
        with dtype_policy(dtype):
            network = pf_vit.PFViT(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                   patch_size=patch_size, mlp_ratio=mlp_ratio, include_top=False,
                                   weights=None, input_shape=tuple(image_shape))
            grid = network.output
            pyramid = {
                "P2": keras.layers.UpSampling2D(4, interpolation="bilinear", name="pyramid_p2")(grid),
                "P3": keras.layers.UpSampling2D(2, interpolation="bilinear", name="pyramid_p3")(grid),
                "P4": grid,
                "P5": keras.layers.MaxPooling2D(2, name="pyramid_p5")(grid),
            }
        super().__init__(network, pyramid, image_shape, dtype=dtype, name=name, **kwargs)
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.patch_size, self.mlp_ratio = patch_size, mlp_ratio
