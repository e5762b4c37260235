"""Fine-tune a keras_pf model on a new dataset, on one device or several (`tf.distribute`).

The one training path behind `keras-pf finetune` and `tools/finetune.py`: a keras_pf
backbone (`include_top=False, pooling="avg"`) with any weights (a registry tag such as
"imagenet", a .weights.h5/.pth path, or None), a new head (dropout + "logits" +
float32 softmax "predictions"), the `keras_pf.training.data` pipelines (random-resized-crop
and flip for training, resize + center crop for evaluation, `preprocess_input`), and
Keras `fit`.

Two-phase schedule (the Keras transfer-learning guide): `head_epochs` with the
backbone frozen, then `epochs` with every layer trainable at `fine_tune_learning_rate`.
With pretrained weights the backbone is called with `training=False` and its
BatchNormalization layers stay frozen in both phases, so their ImageNet statistics
survive small batches; from scratch (`weights=None`) BatchNorm trains normally.

Strategies: "default" (one device), "mirrored" (`tf.distribute.MirroredStrategy`:
all local GPUs, else all logical CPUs; `logical_cpus=N` splits the CPU into N devices
for testing), "multiworker" (`tf.distribute.MultiWorkerMirroredStrategy`: every worker
runs the same command with its own `TF_CONFIG` environment variable (see EPILOG), e.g.
`{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker",
"index": 0}}`; worker 0 is the chief and writes the outputs; see `keras_pf.training.distributed`).
The model, optimizer and metrics are built inside `strategy.scope()`; `batch_size` is
the global batch.

Outputs in `output_dir`: `checkpoints/epochNNN.weights.h5` (weights and optimizer
state after every epoch; `resume=True` continues a killed run from the newest),
`model.keras` (final model), `class_names.json`, `history.json` (per-epoch metrics
and the final evaluation) and `training_curves.png`.
"""

import json
import math
import os
import shutil

from keras_pf.files import atomic_output, write_atomic
from keras_pf.models import resolve
from keras_pf.weights import integrity

STRATEGIES = ("default", "mirrored", "multiworker")


def configure_logical_cpus(count):
    """Split the physical CPU into `count` logical devices (for MirroredStrategy tests).
    Must run before TensorFlow initializes its devices, i.e. first in the process."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            "logical CPUs must be configured before TensorFlow runs anything; call "
            "configure_logical_cpus first in a fresh process"
        ) from error


def build_strategy(name="default"):
    """The `tf.distribute` strategy called `name` (one of STRATEGIES)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        # No GPU: mirror over the logical CPUs; NCCL is GPU-only, so reduce on one device.
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        from keras_pf.training.distributed import multi_worker_strategy

        return multi_worker_strategy()
    raise ValueError(f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}.")


def is_chief(strategy):
    """Whether this worker writes the outputs: always, except under a multi-worker
    cluster, where the "chief" task (else worker 0) does."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    if resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def check_model_arguments(model_name, model_args):
    """A known model, and `model_args` that its builder takes (before any work is done)."""
    resolve.check_name(model_name, generic=True)
    resolve.check_model_args(model_name, model_args)


def build_model(model_name, classes, image_size=224, weights=None, model_args=None, dropout=0.0):
    """`(model, backbone)`: the keras_pf backbone `model_name` (a MODELS name or a
    generic builder "PFResNet"/"PFViT"/"PFPiT" with `model_args`) under a new head of
    `classes` classes. The "predictions" softmax is float32 under mixed precision."""
    import keras

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    backbone = resolve.build(model_name, model_args, include_top=False, weights=weights,
                             input_shape=(height, width, 3), pooling="avg")
    inputs = keras.Input((height, width, 3), name="image")
    # Pretrained backbone: BatchNorm in inference mode, even once unfrozen.
    x = backbone(inputs, training=False) if weights is not None else backbone(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_finetuned"), backbone


def _synchronize_batchnorm(model, synchronized):
    """Under several replicas, each replica's BatchNorm would otherwise update its own
    copy of the moving statistics from its share of the batch, so the replicas'
    copies drift apart and the saved model keeps only the first. Synchronized
    BatchNorm uses the global batch's statistics: identical updates everywhere, and
    the same statistics as one device with the same global batch."""
    import keras

    from keras_pf._compat.keras import nested_layers

    for layer in nested_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized


def _compile(model, learning_rate, weight_decay):
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def plot_history(history, path):
    """Training/validation loss and accuracy per epoch, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                axis.plot(epochs, history[key], marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(True, alpha=0.3)
        axis.legend()
    if history.get("phase_boundary"):
        for axis in axes:
            axis.axvline(history["phase_boundary"] + 0.5, color="gray", linestyle="--")
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def finetune(
    model_name,
    train_source,
    val_source=None,
    output_dir="finetune_output",
    *,
    weights="imagenet",
    model_args=None,
    image_size=224,
    batch_size=32,
    head_epochs=0,
    epochs=5,
    learning_rate=1e-3,
    fine_tune_learning_rate=1e-4,
    weight_decay=0.05,
    dropout=0.0,
    mixed_precision=False,
    strategy="default",
    data_dir=None,
    manual_dir=None,
    seed=None,
    resume=False,
    verbose=1,
):
    """Fine-tune and evaluate; returns a dict with `history`, `evaluation` (final
    loss/accuracy on `val_source`), `class_names`, `model` and the output paths.

    `train_source`/`val_source`: image folders or "tfds:NAME[:SPLIT]" (see
    `keras_pf.training.data`). Without `val_source`, a tfds source is evaluated on its
    validation (else test) split; an image folder needs an explicit `val_source`.

    `resume=True` continues the run in `output_dir` from its newest checkpoint
    (weights, optimizer state, epoch; a killed process, or a multi-worker job whose
    workers were all restarted); without a checkpoint it starts afresh.
    """
    import keras

    from keras_pf.training.data import eval_dataset, train_dataset
    from keras_pf.training.distributed import (TrainingBackup, build_from_local_batch, describe_failure,
                                      resume_epoch, shard_by_data, worker_index)
    from keras_pf.models.transfer import set_backbone_trainable

    check_model_arguments(model_name, model_args)
    for name, value in (("batch_size", batch_size), ("image_size", image_size)):
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{name} must be at least 1; received {value}.")
    for name, value in (("learning_rate", learning_rate), ("fine_tune_learning_rate", fine_tune_learning_rate)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number; received {value}.")
    if head_epochs < 0 or epochs < 0 or head_epochs + epochs == 0:
        raise ValueError("Train for at least one epoch: head_epochs + epochs must be > 0.")
    if val_source is None:
        if not str(train_source).startswith("tfds:"):
            raise ValueError(
                "An image-folder training set needs a validation folder (val_source / --val)."
            )
        val_source = ":".join(str(train_source).split(":")[:2])  # default eval split
    if isinstance(strategy, str):
        strategy = build_strategy(strategy)
    if verbose:
        print(f"strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
    chief = is_chief(strategy)
    worker, workers = worker_index(strategy)
    if not chief:
        # Every worker saves (and backs up, to be able to resume), but only the
        # chief keeps its files: the others write below a folder removed at the end.
        output_dir = os.path.join(output_dir, f".worker-{worker}")
    checkpoint_dir = os.path.join(output_dir, "checkpoints")
    newest = TrainingBackup.latest(checkpoint_dir)[0]
    if newest and not resume:
        raise ValueError(
            f"{checkpoint_dir} holds the checkpoints of an earlier run (up to epoch "
            f"{newest}); pass --resume to continue it, or choose another --output-dir."
        )
    resumed_epoch = resume_epoch(strategy, checkpoint_dir) if resume else 0
    if resumed_epoch:
        print(f"resuming after epoch {resumed_epoch} from {checkpoint_dir}")
    # No folder is made here: the first file written makes it, so a run that fails
    # before writing anything leaves no empty output or checkpoints folder.
    if seed is not None:
        keras.utils.set_random_seed(seed)
    # Workers split each global batch by position (`shard_by_data`), so they must all
    # shuffle alike: one seed for every worker when none is given.
    data_seed = 0 if seed is None and workers > 1 else seed

    train_data, class_names = train_dataset(
        train_source, image_size, batch_size, data_dir=data_dir, manual_dir=manual_dir, seed=data_seed
    )
    val_data, val_class_names = eval_dataset(
        val_source, image_size, batch_size=batch_size, data_dir=data_dir, manual_dir=manual_dir
    )
    if workers > 1:
        train_data, val_data = shard_by_data(train_data), shard_by_data(val_data)
    if list(val_class_names) != list(class_names):
        raise ValueError(
            f"Training and validation classes differ: {class_names} vs {val_class_names}; "
            "give both the same class subfolders."
        )

    previous_policy = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model, backbone = build_model(
                model_name, len(class_names), image_size, weights, model_args, dropout
            )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    distributed = strategy.num_replicas_in_sync > 1
    if distributed:
        _synchronize_batchnorm(model, True)
    if workers > 1:
        build_from_local_batch(model)

    def run_phase(first_epoch, last_epoch, learning_rate):
        with strategy.scope():
            _compile(model, learning_rate, weight_decay)
        result = model.fit(
            train_data, validation_data=val_data, initial_epoch=first_epoch, epochs=last_epoch,
            callbacks=[keras.callbacks.TerminateOnNaN(),
                       TrainingBackup(checkpoint_dir, first_epoch, resumed_epoch)],
            verbose=verbose, shuffle=False,  # train_dataset shuffles
        )
        losses = result.history.get("loss", [])
        if losses and not math.isfinite(losses[-1]):
            raise ValueError(
                f"training diverged: the loss became {losses[-1]} in epoch {first_epoch + len(losses)}; "
                "lower the learning rate (--lr / --fine-tune-lr) or check the data"
            )

    try:
        if head_epochs and resumed_epoch < head_epochs:
            set_backbone_trainable(backbone, False)
            run_phase(0, head_epochs, learning_rate)
        if epochs:
            set_backbone_trainable(backbone, True, freeze_batchnorm=weights is not None)
            run_phase(head_epochs, head_epochs + epochs,
                      fine_tune_learning_rate if head_epochs else learning_rate)
        evaluation = model.evaluate(val_data, verbose=verbose, return_dict=True)
    except Exception as error:
        import tensorflow as tf

        if workers > 1 and isinstance(error, tf.errors.OpError):
            raise describe_failure(error, strategy) from None
        raise
    evaluation = {key: float(value) for key, value in evaluation.items()}
    history = TrainingBackup.saved_history(checkpoint_dir, head_epochs + epochs)
    if distributed:
        _synchronize_batchnorm(model, False)  # the saved model runs anywhere as usual
    paths = {
        "model": os.path.join(output_dir, "model.keras"),
        "class_names": os.path.join(output_dir, "class_names.json"),
        "history": os.path.join(output_dir, "history.json"),
        "plot": os.path.join(output_dir, "training_curves.png"),
    }
    with atomic_output(paths["model"]) as tmp:  # the temp name keeps the .keras suffix
        model.save(tmp)
    integrity.record(paths["model"])  # checked when export or gradcam reads it back
    record = {**history, "phase_boundary": head_epochs if head_epochs and epochs else 0,
              "evaluation": evaluation}
    write_atomic(paths["history"], json.dumps(record, indent=2))
    write_atomic(paths["class_names"], json.dumps(list(class_names), indent=2))
    plot_history(record, paths["plot"])
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(output_dir))  # made only for the worker's folder
        except OSError:
            pass  # not empty: the chief's outputs (one machine), or the user's files
        paths = {}
    return {"history": history, "evaluation": evaluation, "class_names": list(class_names),
            "model": model, "paths": paths}
