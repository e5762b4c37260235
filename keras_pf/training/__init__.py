"""Training: tf.data pipelines for image folders and tensorflow-datasets (`data`),
fine-tuning in `fit` with checkpoints and resume (`finetune`), and tf.distribute
(`distributed`: mirrored and multi-worker). TensorFlow-specific. A new training option
goes into `finetune.finetune` and its flag into `keras_pf_cli/finetune.py`."""
