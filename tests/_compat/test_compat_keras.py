"""Each wrapper of a private Keras 3 API (keras_pf/_compat/keras.py, written for Keras
3.15): if an upgrade breaks one, the test named after it fails."""

import keras
import numpy as np

from keras_pf._compat import keras as compat


def _graph():
    inputs = keras.Input((4,), name="x")
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.ReLU(name="b")(a)
    c = keras.layers.Add(name="c")([a, b])
    return keras.Model(inputs, c, name="m"), inputs


def test_written_for_this_keras():
    assert keras.__version__.startswith(compat.KERAS_VERSION), (
        f"keras_pf/_compat/keras.py was written for Keras {compat.KERAS_VERSION}, this is "
        f"{keras.__version__}: re-check each wrapper")


def test_is_functional_and_has_graph():
    model, _ = _graph()
    assert compat.is_functional(model) and compat.has_graph(model)
    assert not compat.is_functional(keras.Sequential([keras.layers.Dense(1)]))
    assert not compat.is_functional(keras.layers.Dense(1))


def test_nodes_producer_and_input_tensors():
    model, inputs = _graph()
    a, b, c = (model.get_layer(n) for n in "abc")
    assert len(compat.inbound_nodes(a)) == 1
    assert [node.operation.name for node in compat.outbound_nodes(a)] == ["b", "c"]
    assert compat.producer(b) is a
    assert compat.tensor_producer(inputs).name == "x"
    assert [compat.tensor_producer(t).name for t in compat.input_tensors(c)] == ["a", "b"]


def test_nested_layers_and_all_layers():
    inner, _ = _graph()
    outer_in = keras.Input((4,))
    outer = keras.Model(outer_in, inner(outer_in))
    assert [layer.name for layer in compat.nested_layers(outer)][-3:] == ["a", "b", "c"]
    attention = keras.layers.MultiHeadAttention(2, 4)
    x = keras.Input((3, 8))
    with_attention = keras.Model(x, attention(x, x))
    assert len(compat.all_layers(with_attention)) > 2  # the attention's inner layers too


def test_run_through_graph_replaces_each_layer():
    model, _ = _graph()
    doubled = compat.run_through_graph(model, [np.ones((1, 4), "float32")],
                                       lambda layer: (lambda *a, **k: layer(*a, **k)))
    np.testing.assert_allclose(np.asarray(doubled), np.asarray(model(np.ones((1, 4), "float32"))))


def test_trainer_build_hooks():
    model, _ = _graph()
    model.compile(loss="mse")
    calls = []
    compat.replace_trainer_build(model, lambda iterator=None, data_batch=None: calls.append(1))
    compat.build_from_batch(model, (np.ones((2, 4), "float32"), np.ones((2, 3), "float32")))
    model.fit(np.ones((2, 4), "float32"), np.ones((2, 3), "float32"), epochs=1, verbose=0)
    assert calls, "fit no longer calls the trainer's _maybe_symbolic_build"
