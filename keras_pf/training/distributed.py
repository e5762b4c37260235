"""Training on several processes or machines with `tf.distribute`: the strategies,
the per-worker data split, the training state that survives a killed process, and
one-line errors.

Multi-worker training (`tf.distribute.MultiWorkerMirroredStrategy`) runs the same
program on every worker; each finds the cluster and its own index in `TF_CONFIG`.
Worker 0 (or the "chief" task) is the chief: it alone keeps the outputs; the other
workers write theirs (they must: saving reads mirrored variables) below
`<output_dir>/.worker-N`, which is removed when the job finishes.

Fault tolerance is TensorFlow's: every worker backs up its training state (weights,
optimizer state, epoch) at the end of each epoch with `TrainingBackup`, a
`keras.callbacks.BackupAndRestore`; a job whose worker was lost is restarted (all its
workers, as `MultiWorkerMirroredStrategy` requires) and continues from the last
epoch every worker finished. The same files serve `--resume` on one machine.
"""

import glob
import json
import math
import os
import re
import warnings

import keras
import tensorflow as tf

from keras_pf.files import atomic_output, write_atomic
from keras_pf.weights import integrity

# Seconds a worker waits for all workers to register with the coordination service
# (hosted by worker 0) before it gives up.
WORKER_TIMEOUT_VARIABLE = "KERAS_PF_WORKER_TIMEOUT"
DEFAULT_WORKER_TIMEOUT = 300


class DistributedError(ConnectionError):
    """A multi-worker failure, told in one line: which worker, what, likely why. A
    ConnectionError (an OSError): the CLI prints it as one line and exits non-zero."""


def worker_timeout():
    text = os.environ.get(WORKER_TIMEOUT_VARIABLE, "")
    if not text:
        return DEFAULT_WORKER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise ValueError(f"{WORKER_TIMEOUT_VARIABLE}={text!r} must be a number of seconds > 0.")
    return value


def read_tf_config():
    """`(workers, index)` from TF_CONFIG, checked: the worker addresses and this
    worker's index. One clear error for each way TF_CONFIG can be wrong."""
    text = os.environ.get("TF_CONFIG")
    hint = "see `keras-pf finetune --help`"
    if not text:
        raise ValueError(
            "--strategy multiworker needs the TF_CONFIG environment variable on every "
            f"worker (cluster addresses and this worker's index); {hint}."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {hint}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f'TF_CONFIG needs "cluster" and "task" objects; {hint}.')
    workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    if not workers or not all(isinstance(a, str) and re.fullmatch(r".+:\d+", a) for a in workers):
        raise ValueError(f'TF_CONFIG "cluster" needs "worker" addresses as "host:port"; got {cluster}.')
    task_type, index = task.get("type"), task.get("index")
    jobs = {"worker": cluster.get("worker", []), "chief": cluster.get("chief", [])}
    if task_type not in jobs or not isinstance(index, int) or not 0 <= index < len(jobs[task_type]):
        raise ValueError(
            f'TF_CONFIG "task" {task} names no task of the cluster; use {{"type": "worker", '
            f'"index": I}} with I from 0 to {len(jobs["worker"]) - 1}.'
        )
    return workers, (index if task_type == "chief" else index + len(jobs["chief"]))


def multi_worker_strategy(cluster_resolver=None):
    """`tf.distribute.MultiWorkerMirroredStrategy` (with the Keras 3 fix below) for
    the cluster in TF_CONFIG, or of `cluster_resolver` (e.g.
    `tf.distribute.cluster_resolver.SlurmClusterResolver()`); gives up with a
    `DistributedError` if the peers do not all come up within `worker_timeout()`."""
    if cluster_resolver is None:
        workers, index = read_tf_config()
    else:
        spec = cluster_resolver.cluster_spec().as_dict()
        workers = list(spec.get("chief", [])) + list(spec.get("worker", []))
        index = cluster_resolver.task_id + (
            len(spec.get("chief", [])) if cluster_resolver.task_type == "worker" else 0)
    timeout = worker_timeout()
    _configure_coordination(cluster_resolver, timeout)
    try:
        return _MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)
    except (RuntimeError, tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as error:
        if isinstance(error, tf.errors.OpError) or "Timeout waiting for the cluster" in str(error):
            peers = ", ".join(a for i, a in enumerate(workers) if i != index)
            raise DistributedError(
                f"worker {index} of {len(workers)}: the other workers ({peers}) did not all "
                f"join within {timeout:g} s; start every worker with the same TF_CONFIG "
                f"cluster and its own index, check that those host:port addresses are "
                f"reachable ({WORKER_TIMEOUT_VARIABLE} sets the wait)"
            ) from None
        raise
    except tf.errors.OpError as error:
        raise DistributedError(
            f"worker {index} of {len(workers)}: could not start its server at "
            f"{workers[index]} ({first_line(error)}); is the port free and the address this host's?"
        ) from None


def _configure_coordination(cluster_resolver, timeout):
    """The strategy's coordination service (which it would set up itself), with a
    deadline: TensorFlow's default waits for every worker to register for an hour.
    Its heartbeats are also how a lost peer is noticed."""
    from keras_pf._compat.tensorflow import configure_coordination

    resolver = cluster_resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()
    configure_coordination(resolver.cluster_spec(), timeout)


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """Keras 3's TensorFlow trainer averages each step's metrics across replicas
    with `strategy.reduce("MEAN", value, axis=0)`; the metrics are scalars, which
    have no axis 0 ("Invalid reduction dimension 0 for input with 0 dimensions").
    A scalar is averaged across replicas alone (axis=None), as Keras means."""

    def reduce(self, reduce_op, value, axis):
        if axis is not None:
            local = self.experimental_local_results(value)[0]
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                axis = None
        return super().reduce(reduce_op, value, axis)


def worker_index(strategy):
    """`(index, count)` of this worker in its cluster; `(0, 1)` without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return 0, 1
    chiefs = len(cluster.get("chief", []))
    index = resolver.task_id + chiefs if resolver.task_type == "worker" else 0
    return index, chiefs + len(cluster.get("worker", []))


def first_line(error):
    """The first line of an error's message, without TensorFlow's tensor dumps."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message).strip()
    return message.splitlines()[0][:300] if message else type(error).__name__


def describe_failure(error, strategy):
    """A `DistributedError` for an error raised while workers train together."""

    index, count = worker_index(strategy)
    cause = ""
    if isinstance(error, (tf.errors.UnavailableError, tf.errors.CancelledError,
                          tf.errors.DeadlineExceededError, tf.errors.FailedPreconditionError)):
        cause = ("; a peer worker was lost or restarted: restart every worker with --resume "
                 "to continue from the last epoch all finished")
    return DistributedError(f"worker {index} of {count}: {type(error).__name__}: {first_line(error)}{cause}")


def resume_epoch(strategy, directory):
    """The epoch to resume after: the newest checkpoint in `directory`, or under
    several workers the newest that every worker has (a worker killed while the
    others saved is one epoch behind); each keeps all its epochs' checkpoints."""
    for partial in glob.glob(os.path.join(glob.escape(directory), ".tmp_*")):
        os.remove(partial)  # a save cut short by a killed process (see atomic_output)
    epoch = TrainingBackup.latest(directory)[0]
    if worker_index(strategy)[1] == 1:
        return epoch
    epochs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([epoch], tf.int64))
    return int(tf.reduce_min(strategy.gather(epochs, axis=0)))


def shard_by_data(dataset):
    """`dataset` to be split between workers element by element (auto-shard policy
    DATA): every worker runs the whole pipeline and keeps its share of each global
    batch. The image folder pipeline reads a list of file names (no files for FILE
    sharding to split) and tfds splits often have fewer files than workers, so DATA is
    the policy that always splits evenly; it needs the same element order on every
    worker, hence the same shuffle seed (see `finetune`)."""

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_from_local_batch(model):
    """Keras 3's TensorFlow trainer builds a model before `fit`/`evaluate` from one
    batch, which it first averages across replicas with `strategy.reduce`; under
    MultiWorkerMirroredStrategy that reduce gets the batch's (images, labels) tuple and
    fails ("Attempt to convert a value (PerReplica...) ... to a Tensor",
    keras-team/keras#20585). The build only needs shapes and dtypes, which this
    worker's own share of the batch has: use it, with no cross-worker reduce."""
    from keras import tree

    from keras_pf._compat.keras import build_from_batch, replace_trainer_build

    strategy = model.distribute_strategy

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(local, next(batches))
                break
        with strategy.scope():
            build_from_batch(model, data_batch)

    replace_trainer_build(model, maybe_symbolic_build)


class TrainingBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backups are the run's checkpoints,
    `directory/epochNNN.weights.h5` (weights and optimizer state after epoch NNN,
    counted from 1 over both phases), each written whole or not at all, plus
    `history.json` (the metrics of the epochs so far). Keras' own writes one file in
    place, so a process killed while saving could leave no usable backup; here the
    newest complete checkpoint is always there.

    `first_epoch`: the epoch this `fit` starts at (the phase's first);
    `restore_epoch`: the checkpoint to continue from (0: none, see `resume_epoch`).
    A checkpoint from an earlier phase restores the weights only: that phase's
    optimizer trained other variables, the new phase starts its own."""

    PATTERN = "epoch{epoch:03d}.weights.h5"

    def __init__(self, directory, first_epoch=0, restore_epoch=0):
        super().__init__(directory, save_freq="epoch", delete_checkpoint=False)
        self.first_epoch = first_epoch
        self.restore_epoch = restore_epoch
        self.history = {}

    @classmethod
    def latest(cls, directory):
        """`(epoch, path)` of the newest checkpoint in `directory`, or `(0, None)`."""
        found = []
        for path in glob.glob(os.path.join(glob.escape(directory), "epoch*.weights.h5")):
            match = re.fullmatch(r"epoch(\d+)\.weights\.h5", os.path.basename(path))
            if match:
                found.append((int(match.group(1)), path))
        return max(found, default=(0, None))

    @classmethod
    def saved_history(cls, directory, epochs):
        """The per-epoch metrics of the first `epochs` epochs, as last backed up."""
        try:
            with open(os.path.join(directory, "history.json")) as f:
                history = json.load(f)
        except (OSError, ValueError):
            return {}
        return {key: list(values)[:epochs] for key, values in history.items()}

    def on_train_begin(self, logs=None):
        self.model._initial_epoch = None  # Keras keeps it across fit calls
        self._load_model()

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None

    def _load_model(self):
        from keras_pf.weights.safe_load import check_weights_file, load_weights  # one-line errors

        epoch = self.restore_epoch
        if not epoch or epoch < self.first_epoch:
            return
        path = os.path.join(self.backup_dir, self.PATTERN.format(epoch=epoch))
        check_weights_file(path)  # its integrity record, written with it
        if epoch == self.first_epoch:
            # The previous phase's last checkpoint: its optimizer state is not this
            # phase's (other trainable variables); Keras skips it with a warning.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                load_weights(self.model, path)
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        load_weights(self.model, path)
        self.model._initial_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs and not math.isfinite(logs.get("loss", 0.0)):
            return  # a diverged epoch (TerminateOnNaN stops the run): nothing worth keeping
        self._current_epoch = epoch + 1
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._save_model()

    def _save_model(self):
        path = os.path.join(self.backup_dir, self.PATTERN.format(epoch=self._current_epoch))
        with atomic_output(path) as tmp:
            self.model.save_weights(tmp)
        integrity.record(path)  # checked when --resume reads it back
        previous = self.saved_history(self.backup_dir, self._current_epoch - len(
            next(iter(self.history.values()), [])))
        merged = {key: previous.get(key, []) + values for key, values in self.history.items()}
        write_atomic(os.path.join(self.backup_dir, "history.json"), json.dumps(merged))
