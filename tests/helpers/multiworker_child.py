"""`keras-pf finetune` as a test's subprocess: `python multiworker_child.py WEIGHTS.npz
finetune ARGS...` runs the real command line, then saves this process's final model
weights to WEIGHTS.npz, so that a test can compare the workers (the non-chief workers
keep no output files)."""

import sys

import numpy as np

import keras_pf.training.finetune
from keras_pf_cli import main

weights_path = sys.argv[1]
finetune = keras_pf.training.finetune.finetune


def finetune_and_save_weights(*args, **kwargs):
    result = finetune(*args, **kwargs)
    np.savez(weights_path, *result["model"].get_weights())
    return result


keras_pf.training.finetune.finetune = finetune_and_save_weights
sys.exit(main(sys.argv[2:]))
