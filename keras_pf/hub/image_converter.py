"""The evaluation transform of keras_pf's weights as a keras-hub `ImageConverter`."""

import keras
import numpy as np

from keras_hub.layers import ImageConverter

from keras_pf.models.imagenet import MEAN, STD

#: scale and offset that turn RGB pixels in [0, 255] into the ImageNet-normalized input
#: the networks were trained on (`keras_pf.preprocess_input`): x / 255 / std - mean / std
IMAGENET_SCALE = tuple(float(1.0 / (255.0 * s)) for s in STD)
IMAGENET_OFFSET = tuple(float(-m / s) for m, s in zip(MEAN, STD))


class PFImageConverter(ImageConverter):
    """keras-hub's `ImageConverter` with keras_pf's evaluation transform.

    With `crop_ratio` (the registry's, e.g. 0.875 for the paper's weights) images are
    resized, shorter side to `image_size / crop_ratio` (256 for 224, the longer side
    truncated as torchvision does), antialiased, then center-cropped to `image_size`:
    `keras_pf.training.data.eval_transform`, the same TensorFlow ops, so a preset's classifier
    gives the logits `keras_pf`'s pipeline gives. Then `scale` and `offset` normalize
    (default: ImageNet mean and std, as `keras_pf.preprocess_input`). With
    `crop_ratio=None` it is keras-hub's converter unchanged (resize to `image_size`,
    cropping to its aspect ratio; what detection and segmentation presets use, since
    boxes and masks must follow the image).

    Takes RGB pixels in [0, 255]: one image `(H, W, 3)`, a batch `(B, H, W, 3)`, or a
    list of images of different sizes; returns float32.
    """

    def __init__(self, image_size=(224, 224), scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET,
                 crop_ratio=0.875, interpolation="bilinear", antialias=True, **kwargs):
        if crop_ratio is not None:
            crop_ratio = float(crop_ratio)
            if not 0 < crop_ratio <= 1:
                raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
            if image_size is None:
                raise ValueError("crop_ratio needs an image_size to crop to")
        super().__init__(image_size=image_size, scale=scale, offset=offset,
                         interpolation=interpolation, antialias=antialias, **kwargs)
        self.crop_ratio = crop_ratio

    def call(self, inputs):
        if self.crop_ratio is None or self.image_size is None:
            return super().call(inputs)
        import tensorflow as tf

        if isinstance(inputs, dict):
            raise ValueError(
                f"{type(self).__name__} with crop_ratio={self.crop_ratio} center-crops, "
                "which boxes cannot follow; use crop_ratio=None for detection inputs"
            )
        if isinstance(inputs, (list, tuple)):
            images = [self._transform(tf, tf.convert_to_tensor(np.asarray(image)), batched=False)
                      for image in inputs]
            x = tf.stack(images)
        else:
            x = tf.convert_to_tensor(inputs)
            x = self._transform(tf, x, batched=x.shape.rank == 4)
        if not tf.inside_function() and keras.config.backend() != "tensorflow":
            return keras.ops.convert_to_tensor(x.numpy())
        return x

    def _transform(self, tf, x, batched):
        from keras_pf.training.data import eval_transform

        def one(image):
            return eval_transform(image, image_size=self.image_size, crop_ratio=self.crop_ratio,
                                  interpolation=self.interpolation)

        if x.shape.rank not in (3, 4):
            raise ValueError(f"expected an image (H, W, 3) or a batch (B, H, W, 3); got shape {x.shape}")
        if batched:
            x = tf.map_fn(one, x, fn_output_signature=tf.TensorSpec((*self.image_size, 3), tf.float32))
        else:
            x = one(x)
        if self.scale is not None:
            x = x * tf.constant(np.asarray(self.scale, np.float32))
        if self.offset is not None:
            x = x + tf.constant(np.asarray(self.offset, np.float32))
        return tf.cast(x, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "crop_ratio": self.crop_ratio}

    @classmethod
    def from_preset(cls, preset, **kwargs):
        from keras_pf.hub.preset_checks import checked_from_preset

        return checked_from_preset(super().from_preset, cls, preset, **kwargs)
