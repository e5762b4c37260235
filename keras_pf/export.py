"""Compatibility name: the TFLite export lives in `keras_pf.mobile.export`."""

from keras_pf.mobile.export import *  # noqa: F401,F403
from keras_pf.mobile.export import (  # noqa: F401
    DYNAMIC_SHAPE_OPS, WEIGHTED_OPS, add_export_arguments, mobile_model, run_export)
