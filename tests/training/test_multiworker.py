"""Multi-worker fine-tuning across real processes on 127.0.0.1, fault tolerance and
`--resume`, through the `keras-pf finetune` command line.

Every process has a deadline (PROCESS_TIMEOUT), so a hang fails the test instead of
blocking CI. The `slow` marker (`-m slow`) adds a three-worker run and a two-worker job whose
worker is killed and restarted (each 100-230 s on 2 cores; the default run keeps a killed
single-process run and its `--resume`)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import TINY_RESNET, make_shapes_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = os.path.join(REPO, "tests", "helpers", "multiworker_child.py")
TINY_RESNET = dict(TINY_RESNET, block="hybrid")
PROCESS_TIMEOUT = 600  # seconds; generous for a loaded 2-core machine
BATCH, PER_CLASS = 8, 16  # 48 training images: 6 steps of a global batch of 8
STEPS = 3 * PER_CLASS // BATCH


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiworker_data")
    return (make_shapes_folder(str(root / "train"), PER_CLASS, seed=0, size=32),
            make_shapes_folder(str(root / "val"), 4, seed=1, size=32))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def finetune_args(folders, out, epochs, *extra):
    train, val = folders
    return ["finetune", "PFResNet", train, "--val", val, "--weights", "none",
            "--model-args", json.dumps(TINY_RESNET), "--image-size", "32",
            "--batch-size", str(BATCH), "--epochs", str(epochs), "--lr", "3e-3", "--seed", "0",
            "-o", out, "--quiet", *extra]


def start(args, weights_path, tf_config=None, worker_timeout=60):
    """A `keras-pf finetune` process that saves its final weights to `weights_path`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO,
           "KERAS_PF_WORKER_TIMEOUT": str(worker_timeout)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, CHILD, str(weights_path), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_workers(count, args, tmp_path, tag, **kwargs):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(count)]
    args = [*args, "--strategy", "multiworker"]
    return [start(args, tmp_path / f"{tag}{index}.npz",
                  {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}},
                  **kwargs)
            for index in range(count)]


def finish(process, timeout=PROCESS_TIMEOUT):
    """`(returncode, stdout, stderr)`; kills the process if it outlives `timeout`."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"process still running after {timeout} s:\n{err[-3000:]}")
    return process.returncode, out, err


def weights(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def wait_for(path, processes, timeout=PROCESS_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"process ended ({process.returncode}) before {path}:\n"
                            f"{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            for process in processes:
                process.kill()
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.2)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("keras-pf finetune: error:")]


def optimizer_iterations(checkpoint):
    with h5py.File(checkpoint, "r") as f:
        return int(f["optimizer/vars/0"][()])


def check_agreeing_workers(folders, tmp_path, count, against_one_process):
    out = str(tmp_path / "run")
    args = finetune_args(folders, out, 2)
    workers = start_workers(count, args, tmp_path, "worker")
    single = [start(finetune_args(folders, str(tmp_path / "single"), 2), tmp_path / "single.npz")
              ] if against_one_process else []
    results = [finish(process) for process in [*workers, *single]]
    for returncode, _, err in results:
        assert returncode == 0, err[-3000:]
    # The chief's outputs are there; the other workers' temporary folders are gone.
    for name in ("model.keras", "history.json", "class_names.json", "training_curves.png",
                 "checkpoints/epoch002.weights.h5"):
        assert os.path.exists(os.path.join(out, name)), name
    assert sorted(os.listdir(out)) == ["checkpoints", "class_names.json", "history.json",
                                       "model.keras", "model.keras.sha256.json",
                                       "training_curves.png"]  # and model.keras' integrity record
    # Every worker ends with the same model: the same all-reduced updates, applied
    # to mirrored variables (bitwise identical).
    finals = [weights(tmp_path / f"worker{index}.npz") for index in range(count)]
    for other in finals[1:]:
        for a, b in zip(finals[0], other):
            np.testing.assert_array_equal(a, b)
    # The job learns the task; and (against_one_process) it ends close to one process
    # with the same global batch and seed, in quality rather
    # than weight by weight: both start from the same weights (the chief's, broadcast),
    # but the random crops and flips are drawn inside each worker's rewritten (sharded)
    # pipeline, so the two runs see differently augmented images and their weights
    # part as two seeds of one process would (measured: every weight differs). Both
    # must learn the task (held-out accuracy at least twice chance, loss below the
    # ln(3) of a uniform guess) and end within 3 of the 12 held-out images.
    with open(os.path.join(out, "history.json")) as f:
        multi = json.load(f)["evaluation"]
    assert multi["accuracy"] >= 2 / 3 and multi["loss"] < np.log(3), multi
    if against_one_process:
        with open(os.path.join(tmp_path, "single", "history.json")) as f:
            one = json.load(f)["evaluation"]
        assert one["accuracy"] >= 2 / 3 and one["loss"] < np.log(3), (multi, one)
        assert abs(multi["accuracy"] - one["accuracy"]) <= 0.25, (multi, one)


def test_two_workers_fine_tune_and_agree(folders, tmp_path):
    # the one-process run to compare with is the slow tier's (below): beside two workers
    # it made a third process on two cores
    check_agreeing_workers(folders, tmp_path, 2, against_one_process=False)


@pytest.mark.slow
def test_two_workers_end_as_one_process_would(folders, tmp_path):
    check_agreeing_workers(folders, tmp_path, 2, against_one_process=True)


@pytest.mark.slow
def test_three_workers_fine_tune_and_agree(folders, tmp_path):
    check_agreeing_workers(folders, tmp_path, 3, against_one_process=True)


HEAVY = pytest.mark.slow


@HEAVY
def test_a_lost_worker_restarted_with_the_others_resumes_the_job(folders, tmp_path):
    out = str(tmp_path / "run")
    args = finetune_args(folders, out, 3)
    chief, worker = start_workers(2, args, tmp_path, "first", worker_timeout=20)
    wait_for(os.path.join(out, ".worker-1", "checkpoints", "epoch001.weights.h5"), [chief, worker])
    worker.send_signal(signal.SIGKILL)
    finish(worker)
    # The chief notices the lost peer (TensorFlow's health check) and stops with one line.
    returncode, _, err = finish(chief, timeout=180)
    assert returncode != 0
    (line,) = error_lines(err)
    assert "worker 0 of 2" in line and "--resume" in line and "Traceback" not in err, err[-2000:]
    # TensorFlow's fault tolerance: restart every worker; the job continues.
    results = [finish(p) for p in start_workers(2, [*args, "--resume"], tmp_path, "again")]
    for returncode, _, err in results:
        assert returncode == 0, err[-3000:]
    resumed = [line for line in results[0][1].splitlines() if line.startswith("resuming after epoch")]
    assert resumed and int(resumed[0].split()[3]) in (1, 2), results[0][1]
    with open(os.path.join(out, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 3
    assert optimizer_iterations(os.path.join(out, "checkpoints", "epoch003.weights.h5")) == 3 * STEPS
    assert not os.path.exists(os.path.join(out, ".worker-1"))
    for a, b in zip(weights(tmp_path / "again0.npz"), weights(tmp_path / "again1.npz")):
        np.testing.assert_array_equal(a, b)


def test_resume_continues_a_killed_single_process_run(folders, tmp_path):
    out = str(tmp_path / "run")
    args = finetune_args(folders, out, 3)
    process = start(args, tmp_path / "killed.npz")
    wait_for(os.path.join(out, "checkpoints", "epoch001.weights.h5"), [process])
    process.send_signal(signal.SIGKILL)
    finish(process)
    # Without --resume, the earlier run's checkpoints are not silently mixed in.
    returncode, _, err = finish(start(args, tmp_path / "refused.npz"))
    assert returncode == 2 and "--resume" in error_lines(err)[0], err[-2000:]
    returncode, stdout, err = finish(start([*args, "--resume"], tmp_path / "resumed.npz"))
    assert returncode == 0, err[-3000:]
    epoch = int(next(line for line in stdout.splitlines() if line.startswith("resuming")).split()[3])
    assert epoch in (1, 2)
    # The optimizer state came back with the weights: its step count went on from
    # the checkpoint's, instead of restarting from 0.
    assert optimizer_iterations(os.path.join(out, "checkpoints", f"epoch{epoch:03d}.weights.h5")) == epoch * STEPS
    assert optimizer_iterations(os.path.join(out, "checkpoints", "epoch003.weights.h5")) == 3 * STEPS
    with open(os.path.join(out, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 3
    assert not [name for name in os.listdir(os.path.join(out, "checkpoints")) if name.startswith(".tmp_")]


def test_a_worker_whose_peer_never_starts_gives_up(folders, tmp_path):
    timeout = 5
    (port,) = free_ports(1)
    lonely = start(finetune_args(folders, str(tmp_path / "run"), 1, "--strategy", "multiworker"),
                   tmp_path / "w.npz",
                   {"cluster": {"worker": ["127.0.0.1:1", f"127.0.0.1:{port}"]},
                    "task": {"type": "worker", "index": 1}}, worker_timeout=timeout)
    started = time.monotonic()
    returncode, _, err = finish(lonely, timeout=180)
    assert returncode != 0
    (line,) = error_lines(err)
    assert "worker 1 of 2" in line and "did not all join" in line and "127.0.0.1:1" in line, line
    assert "Traceback" not in err
    assert time.monotonic() - started < 120


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "names no task"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
])
def test_bad_tf_config_is_one_line(tf_config, message, monkeypatch):
    from keras_pf.training.distributed import read_tf_config

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        read_tf_config()
