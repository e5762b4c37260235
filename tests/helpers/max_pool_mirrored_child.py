"""A tiny R50-max fitted under MirroredStrategy over two logical CPUs, as a test's
subprocess (logical devices must be configured before TensorFlow initializes): prints
one JSON line `{"replicas": n, "framework": [losses], "framework_again": [...], "mask":
[...]}`, each a fit from the same seed with `FastMaxPooling2D.gradient` set so."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_pf.training.finetune import build_strategy, configure_logical_cpus  # noqa: E402

configure_logical_cpus(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_pf  # noqa: E402
from keras_pf.models.layers import FastMaxPooling2D  # noqa: E402

rng = np.random.default_rng(7)
x = rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
y = rng.integers(0, 4, 16)
strategy = build_strategy("mirrored")  # what `keras-pf finetune --strategy mirrored` uses


def fit(gradient, steps=8):
    FastMaxPooling2D.gradient = gradient
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                                  input_shape=(32, 32, 3), classes=4, classifier_activation=None)
        model.compile(optimizer=keras.optimizers.SGD(0.02),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 8 images per replica
    return model.fit(data, epochs=steps, shuffle=False, verbose=0).history["loss"]


print(json.dumps({"replicas": strategy.num_replicas_in_sync, "framework": fit("framework"),
                  "framework_again": fit("framework"), "mask": fit("mask")}))
