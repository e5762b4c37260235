"""keras_pf/_compat/torch.py (written for PyTorch 2.13, Keras 3.15): the channels-last
max-pool that FastMaxPooling2D runs on the torch backend must be Keras' torch max-pool
in values and gradient, bit for bit, at unique maxima and at ties, in every precision.

The check runs in a child process on the torch backend (tests/helpers/other_backend.py:
$KERAS_PF_TORCH_PYTHON, or this interpreter if it has torch; skipped otherwise)."""

from other_backend import run_on_backend

CHECK = r'''
import numpy as np, torch, keras
from keras_pf._compat import torch as compat
from keras_pf.models.layers import FastMaxPooling2D

assert torch.__version__.startswith(compat.TORCH_VERSION), (torch.__version__, compat.TORCH_VERSION)
from max_pool_cases import CONFIGS as configs
rng = np.random.default_rng(0)
checked = 0
for dtype in ("float32", "float16", "bfloat16"):
    for config in configs:
        for ties in (False, True):
            for hw in ((10, 9), (7, 8)):
                x = (rng.integers(-2, 2, (2, *hw, 4)) if ties else rng.normal(size=(2, *hw, 4)))
                x = x.astype("float64")
                x[0, 0, :, 0] = -np.inf  # windows that are all -inf
                mine = FastMaxPooling2D(*config, dtype=dtype)
                theirs = keras.layers.MaxPooling2D(*config, dtype=dtype)
                a = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
                b = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
                assert mine._torch_channels_last(a)
                ya, yb = mine(a), theirs(b)
                assert ya.shape == yb.shape and torch.equal(ya, yb), (config, dtype, ties, hw)
                w = torch.tensor(rng.uniform(0.5, 1.5, tuple(yb.shape)), dtype=yb.dtype)
                (ya * w).float().sum().backward()
                (yb * w).float().sum().backward()
                assert torch.equal(a.grad, b.grad), (config, dtype, ties, hw)
                checked += 1
model = keras.Sequential([keras.Input((8, 8, 2)), FastMaxPooling2D(3, 2)])
assert tuple(model(np.zeros((1, 8, 8, 2), "float32")).shape) == (1, 3, 3, 2)
print("checked", checked)
'''


def test_channels_last_max_pool_is_keras_torch_max_pool():
    assert "checked 84" in run_on_backend("torch", CHECK)
