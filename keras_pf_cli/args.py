"""What every subcommand's parser shares: number types whose errors are one line, a
parser whose usage errors are one line, vocabulary checks against the library's own
tables (made after parsing, so that parsing imports no keras_pf module), and keeping
TensorFlow's native start-up logs off the terminal."""

import argparse
import importlib
import json
import math
import os
import sys


def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind, accept, rule):
    """An argparse `type=`: a `kind` number for which `accept(value)` holds."""
    def parse(text):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


positive_int = _bounded(int, lambda v: v > 0, "at least 1")
non_negative_int = _bounded(int, lambda v: v >= 0, "0 or more")
positive_float = _bounded(float, lambda v: v > 0, "greater than 0")
non_negative_float = _bounded(float, lambda v: v >= 0, "0 or more")
unit_interval = _bounded(float, lambda v: 0 < v <= 1, "in (0, 1]")  # a fraction, e.g. a crop ratio
probability = _bounded(float, lambda v: 0 <= v < 1, "in [0, 1)")  # a rate, e.g. dropout


def json_object(text):
    """An argparse `type=` for `--model-args`: a JSON object of keyword arguments."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of keyword arguments: {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(ValueError):
    """A bad argument found after parsing: reported as argparse would (one line, exit 2)."""


def one_of(option, value, allowed):
    """Check an option's value(s) against the library's vocabulary `allowed` (argparse's
    own wording, so the message reads as a `choices=` error would)."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if item is not None and item not in allowed:
            raise UsageError(f"argument {option}: invalid choice: {item!r} "
                             f"(choose from {', '.join(map(repr, allowed))})")


def silence_tensorflow():
    """Keep TensorFlow's native logs (CUDA probing, the cuInit 'error' on machines
    without a GPU, oneDNN notices) off the terminal: TF_CPP_MIN_LOG_LEVEL must be set
    before TensorFlow is imported, and a few lines come before its logging is set up,
    so stderr is closed while it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        pass  # reported, with its message, where it is used
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
