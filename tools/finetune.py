#!/usr/bin/env python
"""Fine-tune a keras_pf model on an image folder or a tensorflow-datasets dataset.

Same as `keras-pf finetune` (see `keras_pf/finetune.py`), e.g.

    python tools/finetune.py PFResNet50Hybrid tfds:beans --head-epochs 2 --epochs 5 -o runs/beans
    python tools/finetune.py PFResNet50Max data/train --val data/val --strategy mirrored
"""

import sys

from keras_pf_cli import main as cli_main


def main(argv=None):
    return cli_main(["finetune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
