"""Whether TensorFlow is tracing the current graph for XLA (`tf.function(jit_compile=True)`,
e.g. a model compiled with `jit_compile=True`). TensorFlow has no public query for it;
`tf.function` itself asks `control_flow_util.GraphOrParentsInXlaContext`."""


def tensorflow_in_xla_context():
    """True while a `jit_compile=True` function (or a function it calls) is being traced;
    False eagerly, in plain `tf.function`s, and if the private API has moved."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
