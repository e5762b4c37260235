"""tf_keras (Keras 2, written for tf_keras 2.21) MultiHeadAttention internals: the
quantization-aware twin of self-attention (`mobile.qat`) calls its projections one by
one and fake-quantizes their kernels."""

TF_KERAS_VERSION = "2.21"

# the four projections of a tf_keras MultiHeadAttention, in weight order
ATTENTION_PROJECTIONS = ("query", "key", "value", "output")


def build_attention(attention, input_shape):
    """Build `attention` for self-attention on inputs of `input_shape`."""
    attention._build_from_signature(query=input_shape, value=input_shape)


def attention_projection(attention, which):
    """The EinsumDense of projection `which` (one of `ATTENTION_PROJECTIONS`)."""
    return getattr(attention, f"_{which}_dense")


def compute_attention(attention, query, key, value, training=None):
    """`(context, scores)` of projected query/key/value, unmasked."""
    return attention._compute_attention(query, key, value, training=training)


def rename(layer, name):
    """Set a tf_keras layer's name after construction (it has no public setter)."""
    layer._name = name
