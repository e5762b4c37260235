"""What the three keras_pf backbones share: building the network with keras_pf's own
builder, weights loading, `from_preset` with one-line errors, and the config."""

import contextlib

import keras

from keras_pf.hub import weights as hub_weights
from keras_hub.models import FeaturePyramidBackbone


@contextlib.contextmanager
def dtype_policy(dtype):
    """Build under `dtype` (keras_pf's builders take the global dtype policy, as
    keras.applications' do); None or a quantization policy map: unchanged."""
    if dtype is None or isinstance(dtype, keras.dtype_policies.DTypePolicyMap):
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class PFBackbone(FeaturePyramidBackbone):
    """Base of `PFResNetBackbone`, `PFViTBackbone` and `PFPiTBackbone`.

    A subclass builds the keras_pf network (`include_top=False`, `pooling=None`) with
    the family's generic builder and passes it with its pyramid to `__init__`: the
    backbone is a functional model on the network's own input and output tensors, so it
    has the network's layers, names and weights in the same order
    (`backbone.set_weights(model.get_weights())` transfers them, and a keras_pf
    `.weights.h5` file loads as it is).
    """

    #: the builder arguments the subclass stores in its config (besides image_shape)
    config_names = ()

    def __init__(self, network, pyramid_outputs, image_shape, dtype=None, **kwargs):
        unknown = sorted(set(kwargs) - {"name", "trainable"})
        if unknown:  # Keras' functional model would ignore them silently
            raise TypeError(f"{type(self).__name__} got unexpected arguments {unknown}; it takes "
                            f"{', '.join(self.config_names)}, image_shape, dtype, name, trainable")
        super().__init__(inputs=network.input, outputs=network.output, dtype=dtype, **kwargs)
        self.pyramid_outputs = pyramid_outputs
        self.image_shape = tuple(image_shape)
        self.data_format = "channels_last"

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self.config_names})
        config["image_shape"] = self.image_shape
        return config

    def load_weights(self, filepath, *args, **kwargs):
        """Load a Keras weights file strictly (any missing or mis-shaped weight is an
        error naming the file), or the registry weights a keras_pf pointer names."""
        if hub_weights.loading_strictly():
            return super().load_weights(filepath, *args, **kwargs)
        return hub_weights.load_backbone_weights(self, filepath)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's `from_preset` (a preset name, a local folder, `hf://`, `kaggle://`),
        with a preset folder checked first: any problem is one `PresetError` line naming
        the folder and what is wrong with it."""
        from keras_pf.hub.preset_checks import checked_from_preset

        return checked_from_preset(super().from_preset, cls, preset, load_weights=load_weights,
                                   **kwargs)
