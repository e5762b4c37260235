"""keras_pf/_compat/jax.py (written for JAX 0.10): `is_differentiated` must be true exactly
where a gradient is taken, so that FastMaxPooling2D takes its mask gradient in Keras'
JAX train step and the framework's max-pool in predict; both must be keras' max-pool in
values and gradient (ties included, every precision).

Runs in a child process on the jax backend (tests/helpers/other_backend.py:
$KERAS_PF_JAX_PYTHON, or this interpreter if it has JAX; skipped otherwise)."""

from other_backend import run_on_backend

CHECK = r'''
import jax, jax.numpy as jnp, numpy as np, keras
from keras_pf._compat import jax as compat
from keras_pf.models import layers as pf_layers
from keras_pf.models.layers import FastMaxPooling2D

assert jax.__version__.startswith(compat.JAX_VERSION), (jax.__version__, compat.JAX_VERSION)
seen = []
probe = lambda x: seen.append(compat.is_differentiated(x)) or x
x = jnp.ones((2, 3))
probe(x); jax.jit(probe)(x); jax.grad(lambda v: probe(v).sum())(x)
jax.jit(jax.grad(lambda v: probe(v).sum()))(x); jax.jvp(probe, (x,), (x,))
jax.jit(jax.value_and_grad(lambda v: jax.jit(probe)(v).sum()))(x)
assert seen[:5] == [False, False, True, True, True], seen

# Keras' train step takes the mask gradient, predict and a plain call do not
calls = []
real = pf_layers.max_pool_gradient
pf_layers.max_pool_gradient = lambda *a, **k: calls.append(1) or real(*a, **k)
model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(3, 1),
                          FastMaxPooling2D(3, 2), keras.layers.Flatten(), keras.layers.Dense(2)])
model.compile("sgd", "mse")
data = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype("float32")
model.predict_on_batch(data); model(data)
assert not calls, "predict took the mask gradient path"
model.train_on_batch(data, np.zeros((4, 2), "float32"))
assert calls, "the train step did not take the mask gradient"
pf_layers.max_pool_gradient = real

# outside autodiff a stride-1 pool is two 1-D reduce-windows (faster in XLA on CPU), a
# strided one JAX's 2-D one
def windows(layer, shape=(2, 10, 9, 4)):
    import re
    text = str(jax.make_jaxpr(layer)(jnp.ones(shape)))
    return re.findall(r"reduce_window_max\[[^\]]*window_dimensions=(\([^)]*\))", text)
assert windows(FastMaxPooling2D(3, 1, "same")) == ["(1, 1, 3, 1)", "(1, 3, 1, 1)"], \
    windows(FastMaxPooling2D(3, 1, "same"))
assert windows(FastMaxPooling2D(3, 2)) == ["(1, 3, 3, 1)"]

from max_pool_cases import CONFIGS as configs
rng = np.random.default_rng(1)
checked = 0
for dtype in ("float32", "float16", "bfloat16"):
    for config in configs:
        for ties in (False, True):
            v = rng.integers(-2, 2, (2, 10, 9, 4)) if ties else rng.normal(size=(2, 10, 9, 4))
            v = v.astype("float64")
            v[0, 0, :, 0] = -np.inf
            v = jnp.asarray(v, dtype)
            mine = FastMaxPooling2D(*config, dtype=dtype)
            theirs = keras.layers.MaxPooling2D(*config, dtype=dtype)
            w = jnp.asarray(rng.uniform(0.5, 1.5, theirs.compute_output_shape(v.shape)), dtype)
            loss = lambda layer: jax.jit(jax.value_and_grad(
                lambda u: jnp.sum((layer(u) * w).astype("float32")), has_aux=False))
            (la, ga), (lb, gb) = loss(mine)(v), loss(theirs)(v)
            assert np.asarray(jax.jit(mine)(v)).tobytes() == np.asarray(theirs(v)).tobytes()
            assert la == lb, (config, dtype, ties)
            tol = 1e-6 if dtype == "float32" else 2e-2  # overlapping windows' sums round
            np.testing.assert_allclose(np.asarray(ga, "float32"), np.asarray(gb, "float32"),
                                       rtol=tol, atol=tol, err_msg=str((config, dtype, ties)))
            checked += 1
print("checked", checked)
'''


def test_mask_gradient_exactly_where_jax_differentiates_and_equal_to_keras():
    assert "checked 42" in run_on_backend("jax", CHECK)


GROUPED_CHECK = r'''
import jax, jax.numpy as jnp, numpy as np, keras
from keras_pf.models.layers import FastGroupedConv2D

forms = []
real = FastGroupedConv2D._form
FastGroupedConv2D._form = lambda self, *a: forms.append(real(self, *a)) or forms[-1]

# Keras' train step takes the slices form, predict and a plain call keras' own conv
model = keras.Sequential([keras.Input((9, 9, 4)),
                          FastGroupedConv2D(8, 3, strides=2, groups=4),
                          keras.layers.Flatten(), keras.layers.Dense(2)])
model.compile("sgd", "mse")
data = np.random.default_rng(0).normal(size=(4, 9, 9, 4)).astype("float32")
model.predict_on_batch(data); model(data)
assert set(forms) == {"framework"}, forms
forms.clear()
model.train_on_batch(data, np.zeros((4, 2), "float32"))
# Keras' shape-only symbolic build first, then the compiled step; the grouped conv is
# the first layer here, so only its kernel is differentiated
assert forms == ["framework", "slices"], forms

# the slices form, differentiated under jit, against keras' grouped Conv2D
rng = np.random.default_rng(1)
checked = 0
for shape, filters, kernel, strides, bias in [((2, 9, 9, 4), 8, 3, 2, True),
                                             ((2, 10, 10, 4), 8, 3, 2, True),
                                             ((2, 7, 8, 3), 3, (2, 3), (1, 2), False)]:
    mine = FastGroupedConv2D(filters, kernel, strides=strides, groups=shape[-1], use_bias=bias)
    theirs = keras.layers.Conv2D(filters, kernel, strides=strides, groups=shape[-1],
                                 use_bias=bias)
    mine.build(shape); theirs.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in theirs.get_weights()]
    mine.set_weights(weights); theirs.set_weights(weights)
    x = jnp.asarray(rng.normal(size=shape), "float32")
    w = jnp.asarray(rng.uniform(0.5, 1.5, theirs.compute_output_shape(shape)), "float32")

    def loss(layer, **training):  # keras' Conv2D.call takes no `training`
        def value(x, variables):
            y, _ = layer.stateless_call(variables, [], x, **training)
            return jnp.sum(y * w), y
        return jax.jit(jax.value_and_grad(value, argnums=(0, 1), has_aux=True))

    forms.clear()
    (la, ya), ga = loss(mine, training=True)(x, [v.value for v in mine.trainable_variables])
    assert forms == ["slices"], forms
    (lb, yb), gb = loss(theirs)(x, [v.value for v in theirs.trainable_variables])
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-5)
    for got, want in zip([ga[0], *ga[1]], [gb[0], *gb[1]]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    checked += 1
print("checked", checked)
'''


def test_grouped_conv_takes_slices_exactly_where_jax_differentiates_and_equals_keras():
    """FastGroupedConv2D (PiT's pooling conv) on JAX: the slices form in the train step
    only, with keras' grouped Conv2D's values and gradients."""
    assert "checked 3" in run_on_backend("jax", GROUPED_CHECK)
