#!/usr/bin/env python
"""Benchmark the parameter-free networks side by side with keras.applications ResNet50.

Same as `keras-pf benchmark` (see `keras_pf/benchmark.py`). The README's results:

    python tools/benchmark.py --output-dir benchmarks

A quick look at two models, Keras only:

    python tools/benchmark.py --models ResNet50 PFResNet50Max --precisions --runs 5
"""

import argparse
import sys

from keras_pf.benchmark import add_benchmark_arguments, run_benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_benchmark_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_benchmark(args) or 0
    except (ValueError, OSError, RuntimeError) as error:
        print(f"benchmark: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
