#!/usr/bin/env python
"""Benchmark the parameter-free networks side by side with keras.applications ResNet50.

Same as `keras-pf benchmark` (see `keras_pf/benchmark.py`). The README's results:

    python tools/benchmark.py --output-dir benchmarks

A quick look at two models, Keras only:

    python tools/benchmark.py --models ResNet50 PFResNet50Max --precisions --runs 5
"""

import sys

from keras_pf_cli import main as cli_main


def main(argv=None):
    return cli_main(["benchmark", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
