"""Each wrapper of a private tf_keras API (keras_pf/_compat/tf_keras.py, written for
tf_keras 2.21)."""

import numpy as np
import pytest

from keras_pf._compat import tf_keras as compat


@pytest.fixture(scope="module")
def tf_keras():
    from keras_pf.mobile.qat import import_tfmot

    return import_tfmot()[1]


def test_written_for_this_tf_keras(tf_keras):
    assert tf_keras.__version__.startswith(compat.TF_KERAS_VERSION)


def test_attention_parts_compute_what_the_layer_does(tf_keras):
    attention = tf_keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    x = np.random.default_rng(0).normal(size=(1, 3, 8)).astype("float32")
    compat.build_attention(attention, x.shape)
    project = {which: compat.attention_projection(attention, which) for which in compat.ATTENTION_PROJECTIONS}
    context, _ = compat.compute_attention(attention, project["query"](x), project["key"](x), project["value"](x))
    np.testing.assert_allclose(np.asarray(project["output"](context)), np.asarray(attention(x, x)),
                               rtol=1e-5, atol=1e-6)
    kernels = [project[w].kernel for w in compat.ATTENTION_PROJECTIONS]
    assert [id(k) for k in kernels] == [id(w) for w in attention.weights if "kernel" in w.name]


def test_rename(tf_keras):
    layer = tf_keras.layers.Dense(1)
    compat.rename(layer, "attention")
    assert layer.name == "attention"
