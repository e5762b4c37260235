"""PFResNet presets: computed from keras_pf's weights registry (see keras_pf.hub.presets)."""

from keras_pf.hub.presets import builtin_presets

backbone_presets = builtin_presets("resnet")
