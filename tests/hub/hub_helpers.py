"""Shared pieces of the keras-hub tests: tiny configurations of each family (64x64
inputs, a few thousand parameters) as keras_pf models and as keras-hub backbones.
Every test module here starts with `pytest.importorskip("keras_hub")` and imports
`family` (a fixture) from here."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = str(pathlib.Path(__file__).resolve().parents[2])
# the weights-download fixtures (tests/weights) and the MediaPipe runner (tests/mobile)
# are shared with those folders' tests, importable whichever folder pytest collects
for _folder in ("weights", "mobile"):
    _path = str(pathlib.Path(__file__).resolve().parents[1] / _folder)
    if _path not in sys.path:
        sys.path.append(_path)
SIZE = 64

# family -> builder arguments, keras_pf builder name, keras-hub backbone class name
TINY = {
    "resnet": (dict(block=("max", "hybrid", "hybrid", "max"), depths=(1, 1, 1, 1), width_mult=0.25),
               "PFResNet", "PFResNetBackbone"),
    "vit": (dict(embed_dim=32, depth=2, num_heads=2, patch_size=16, mlp_ratio=2.0), "PFViT", "PFViTBackbone"),
    "pit": (dict(base_dims=(8, 8, 8), depths=(1, 1, 1), heads=(2, 4, 8), patch_size=16, stride=8,
                 mlp_ratio=2.0), "PFPiT", "PFPiTBackbone"),
}
FAMILIES = tuple(TINY)


def tiny_model(family, **kwargs):
    """The keras_pf model of `family`'s tiny configuration (random weights)."""
    import keras_pf

    config, builder, _ = TINY[family]
    args = dict(weights=None, input_shape=(SIZE, SIZE, 3), classes=5, classifier_activation=None)
    args.update(kwargs)
    return getattr(keras_pf, builder)(**config, **args)


def tiny_backbone(family, **kwargs):
    """The keras-hub backbone of the same configuration (random weights)."""
    import keras_pf.hub

    config, _, backbone = TINY[family]
    return getattr(keras_pf.hub, backbone)(**config, image_shape=(SIZE, SIZE, 3), **kwargs)


def images(n=2, size=SIZE, seed=0):
    """RGB pixels in [0, 255], float32."""
    return np.random.RandomState(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def run_python(script, timeout=600, **env):
    """Run `script` in a new interpreter with this checkout first on the path."""
    environment = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environment, timeout=timeout, cwd=REPO)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param
