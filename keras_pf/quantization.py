"""Compatibility name: quantization-aware training lives in `keras_pf.mobile.quantization`."""

from keras_pf.mobile.quantization import *  # noqa: F401,F403
from keras_pf.mobile.quantization import _import_tfmot  # noqa: F401
