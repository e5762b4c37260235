"""Shared test fixtures: the parity cases produced by the original PyTorch code."""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).parent
DATA = TESTS / "data"
# the helper programs and modules the tests import (torch_format, reader_child, ...)
sys.path.insert(0, str(TESTS / "helpers"))
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


# The smallest ResNet the tests build: one block per stage at a quarter of the width.
# JSON-able, so that with a "block" it also serves as --model-args.
TINY_RESNET = {"depths": [1, 1, 1, 1], "width_mult": 0.25}


def tiny_resnet(block="hybrid", size=64, classes=10, **kwargs):
    """A `TINY_RESNET` of `block` stages for `size` x `size` RGB, random weights unless
    `weights` is given."""
    import keras_pf

    args = dict(TINY_RESNET, block=block, weights=None, input_shape=(size, size, 3),
                classes=classes)
    args.update(kwargs)
    return keras_pf.PFResNet(**args)


@pytest.fixture
def small_resnet():
    """A reduced R50-hybrid (`tiny_resnet`, 64x64, 10 classes)."""
    return lambda **kwargs: tiny_resnet(**kwargs)


@pytest.fixture
def parity_case_pit():
    return ParityCase("pit_max_64")


@pytest.fixture
def parity_case_resnet_hybrid():
    return ParityCase("resnet_hybrid_64")


# --- generated image folders ----------------------------------------------------------

SHAPES = {"circle": (220, 40, 40), "square": (40, 200, 40), "triangle": (40, 60, 230)}
CHANCE = 1 / len(SHAPES)


def make_shapes_folder(root, per_class, seed, size=48):
    """An image folder of coloured shapes on noise, one subfolder per shape: a task a
    tiny model learns in a few epochs (fine-tuning, multi-worker, mobile tests)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for shape, colour in SHAPES.items():
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(90, 160, (size, size, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(image)
            r = int(rng.integers(size // 4, size // 2 - 2))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            fill = tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-30, 30, 3), 0, 255))
            box = [cx - r, cy - r, cx + r, cy + r]
            if shape == "circle":
                draw.ellipse(box, fill=fill)
            elif shape == "square":
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
            image.save(os.path.join(root, shape, f"{i:03d}.png"))
    return root


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
            return keras_pf.PFResNet(block=("max", "hybrid", "hybrid", "max"), **TINY_RESNET,
                                     **common)
        if family == "vit":
            return keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, **common)
        return keras_pf.PFPiT(base_dims=(8, 8), depths=(2, 2), heads=(2, 4), patch_size=8,
                              stride=4, **common)
    return make
