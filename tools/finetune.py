#!/usr/bin/env python
"""Fine-tune a keras_pf model on an image folder or a tensorflow-datasets dataset.

Same as `keras-pf finetune` (see `keras_pf/finetune.py`), e.g.

    python tools/finetune.py PFResNet50Hybrid tfds:beans --head-epochs 2 --epochs 5 -o runs/beans
    python tools/finetune.py PFResNet50Max data/train --val data/val --strategy mirrored
"""

import argparse
import sys

from keras_pf.finetune import add_finetune_arguments, run_finetune


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_finetune_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_finetune(args) or 0
    except (ValueError, OSError) as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
