"""Shared test fixtures: the parity cases produced by the original PyTorch code."""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

DATA = pathlib.Path(__file__).parent / "data"
PARITY_CASES = DATA / "parity_cases"
PARITY_KEYS = DATA / "parity_keys"


def case_names():
    return sorted(p.name for p in PARITY_CASES.iterdir() if p.is_dir())


class ParityCase:
    def __init__(self, name):
        self.name = name
        self.dir = PARITY_CASES / name
        self.config = json.loads((self.dir / "config.json").read_text())
        self.checkpoint = self.dir / "checkpoint.pth"

    @property
    def input_nhwc(self):
        return np.load(self.dir / "input.npy").transpose(0, 2, 3, 1)

    @property
    def logits(self):
        return np.load(self.dir / "logits.npy")

    def build(self, weights=None, **overrides):
        """The case's configuration through the generic builder (original argument names)."""
        import keras_pf

        cfg = self.config
        h, w = cfg["input_hw"]
        kwargs = dict(include_top=True, weights=weights, input_shape=(h, w, 3),
                      classes=cfg["num_classes"], classifier_activation=None)
        kwargs.update(overrides)
        if cfg["family"] == "resnet":
            return keras_pf.PFResNet(block=cfg["block"], depths=cfg["layers"],
                                     width_mult=cfg["width_mult"], **kwargs)
        if cfg["family"] == "vit":
            return keras_pf.PFViT(embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                                  num_heads=cfg["num_heads"], patch_size=cfg["patch_size"],
                                  mlp_ratio=cfg["mlp_ratio"], **kwargs)
        return keras_pf.PFPiT(base_dims=cfg["base_dims"], depths=cfg["depth"], heads=cfg["heads"],
                              patch_size=cfg["patch_size"], stride=cfg["stride"],
                              mlp_ratio=cfg["mlp_ratio"], **kwargs)


def load_tool(name):
    """The module of the script `tools/<name>.py` (tools are scripts, not a package)."""
    import importlib.util

    path = pathlib.Path(__file__).parent.parent / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=case_names())
def parity_case(request):
    return ParityCase(request.param)


@pytest.fixture
def small_resnet():
    """A reduced R50-hybrid (width 0.25, one block per stage) with random weights."""
    def make(**kwargs):
        import keras_pf

        args = dict(block="hybrid", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                    input_shape=(64, 64, 3), classes=10)
        args.update(kwargs)
        return keras_pf.PFResNet(**args)
    return make


@pytest.fixture
def parity_case_pit():
    return ParityCase("pit_max_64")


@pytest.fixture
def parity_case_resnet_hybrid():
    return ParityCase("resnet_hybrid_64")


TINY_FAMILIES = ("resnet", "vit", "pit")


@pytest.fixture(scope="session")
def tiny_family():
    """`make(family)`: a small logits model (10 classes, 64x64, random weights) of each
    family, built once per session: ResNet with max and hybrid stages, ViT-max, PiT-max."""
    import functools

    @functools.cache
    def make(family):
        import keras_pf

        common = dict(weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None)
        if family == "resnet":
            return keras_pf.PFResNet(block=("max", "hybrid", "hybrid", "max"), depths=(1, 1, 1, 1),
                                     width_mult=0.25, **common)
        if family == "vit":
            return keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, **common)
        return keras_pf.PFPiT(base_dims=(8, 8), depths=(2, 2), heads=(2, 4), patch_size=8,
                              stride=4, **common)
    return make
