"""JAX internals (written for JAX 0.10): whether a traced value is being differentiated.

FastMaxPooling2D needs its own gradient only under `jax.grad`/`value_and_grad` (Keras'
train step): there its inputs are JAX's autodiff tracers. Elsewhere (predict, export) the
framework's max-pool is the faster forward, and wrapping it in a custom gradient keeps
XLA from fusing it with its neighbours (R50-max's predict 0.81x -> 0.88x of ResNet50)."""

JAX_VERSION = "0.10"


def is_differentiated(x):
    """True if `x` is a tracer of forward- or reverse-mode autodiff (JVP, linearize),
    i.e. a gradient of it is being taken in this trace."""
    from jax._src.interpreters import ad

    return isinstance(x, (ad.JVPTracer, ad.LinearizeTracer))
