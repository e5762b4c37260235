"""Fine-tuning through the code path of `tools/finetune.py` / `keras-pf finetune`:
a learnable generated image folder, MirroredStrategy over two logical CPUs, and the
tensorflow-datasets path offline with `tfds.testing.mock_data`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import keras_pf
from keras_pf.training.finetune import finetune

from conftest import SHAPES, TINY_RESNET, make_shapes_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_RESNET = dict(TINY_RESNET, block="hybrid")
# Each class is one shape in its own colour, at a random place and size on a noisy
# grey background: learnable in a few epochs, but not from a fixed pixel.
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    train = make_shapes_folder(str(root / "train"), per_class=60, seed=0)
    val = make_shapes_folder(str(root / "val"), per_class=20, seed=1)
    return train, val


def _held_out_scores(model_path, val):
    """(accuracy, mean cross-entropy) of the saved model on the validation folder,
    recomputed here."""
    from keras_pf.training.data import eval_dataset

    model = keras.saving.load_model(model_path)
    dataset, _ = eval_dataset(val, image_size=32, batch_size=32)
    probabilities, labels = [], []
    for images, batch_labels in dataset:
        probabilities.append(model.predict(images, verbose=0))
        labels.append(batch_labels.numpy())
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    accuracy = float(np.mean(np.argmax(probabilities, -1) == labels))
    loss = float(np.mean(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1))))
    return accuracy, loss


def test_finetune_image_folder_two_phase(shapes, tmp_path):
    train, val = shapes
    out = str(tmp_path / "run")
    result = finetune(
        "PFResNet", train, val, out, weights=None, model_args=SMALL_RESNET, image_size=32,
        batch_size=16, head_epochs=1, epochs=4, learning_rate=3e-3, fine_tune_learning_rate=3e-3,
        seed=0, verbose=0,
    )
    assert result["class_names"] == sorted(SHAPES)
    assert len(result["history"]["loss"]) == 5
    assert result["evaluation"]["accuracy"] >= 0.7, result
    # The saved model, reloaded, reproduces the reported held-out accuracy.
    accuracy, loss = _held_out_scores(result["paths"]["model"], val)
    assert accuracy == pytest.approx(result["evaluation"]["accuracy"], abs=1e-6)
    assert loss == pytest.approx(result["evaluation"]["loss"], rel=1e-3, abs=1e-5)
    with open(result["paths"]["history"]) as f:
        record = json.load(f)
    assert record["evaluation"]["accuracy"] == result["evaluation"]["accuracy"]
    assert record["phase_boundary"] == 1
    with Image.open(result["paths"]["plot"]) as plot:
        assert plot.format == "PNG" and plot.size[0] > 200
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == sorted(
        [f"epoch{i:03d}.weights.h5{s}" for i in range(1, 6) for s in ("", ".sha256.json")]
        + ["history.json"])
    from keras_pf.weights import integrity

    assert integrity.problem(result["paths"]["model"]) is None  # recorded, and matches
    assert integrity.read_sidecar(result["paths"]["model"]) is not None
    for directory in (out, os.path.join(out, "checkpoints")):
        assert not [name for name in os.listdir(directory) if name.startswith(".tmp_")]
    keras.saving.load_model(result["paths"]["model"]).load_weights(
        os.path.join(out, "checkpoints", "epoch005.weights.h5"))


def test_a_checkpoint_that_fails_to_save_leaves_no_file(tmp_path):
    from keras_pf.training.distributed import TrainingBackup

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    callback = TrainingBackup(str(tmp_path))
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0})
    assert sorted(os.listdir(tmp_path)) == ["epoch001.weights.h5", "epoch001.weights.h5.sha256.json",
                                            "history.json"]

    def interrupted(path):  # half a file, then the process is stopped
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n")
        raise KeyboardInterrupt

    model.save_weights = interrupted
    with pytest.raises(KeyboardInterrupt):
        callback.on_epoch_end(1, {"loss": 0.5})
    assert sorted(os.listdir(tmp_path)) == ["epoch001.weights.h5", "epoch001.weights.h5.sha256.json",
                                            "history.json"]
    assert TrainingBackup.latest(str(tmp_path))[0] == 1
    assert TrainingBackup.saved_history(str(tmp_path), 5) == {"loss": [1.0]}


@pytest.mark.slow  # 60-115 s on 2 cores
def test_finetune_mirrored_two_logical_cpus(shapes, tmp_path):
    """The real command line, in a fresh process: logical devices must be configured
    before TensorFlow initializes."""
    train, val = shapes
    out = str(tmp_path / "mirrored")
    command = [
        sys.executable, os.path.join(REPO, "tools", "finetune.py"), "PFResNet", train, "--val", val,
        "--weights", "none", "--model-args", json.dumps(SMALL_RESNET), "--image-size", "32",
        "--batch-size", "16", "--epochs", "5", "--lr", "3e-3", "--seed", "0",
        "--strategy", "mirrored", "--logical-cpus", "2", "-o", out,
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in completed.stdout
    with open(os.path.join(out, "history.json")) as f:
        record = json.load(f)
    assert record["evaluation"]["accuracy"] >= 0.7, record
    # Reloaded on one device, the saved model scores exactly what the two replicas
    # reported: their BatchNorm statistics stayed identical (synchronized BatchNorm),
    # so the saved copy is the one that was evaluated.
    accuracy, loss = _held_out_scores(os.path.join(out, "model.keras"), val)
    assert accuracy == pytest.approx(record["evaluation"]["accuracy"], abs=1e-6)
    assert loss == pytest.approx(record["evaluation"]["loss"], rel=1e-3, abs=1e-5)


def test_finetune_tfds_offline(tmp_path):
    import tensorflow_datasets as tfds

    # mnist: one grey channel, made RGB by the pipeline; mock examples are random.
    with tfds.testing.mock_data(num_examples=24):
        result = finetune(
            "PFResNet", "tfds:mnist", None, str(tmp_path / "tfds"), weights=None,
            model_args=SMALL_RESNET, image_size=32, batch_size=8, epochs=1, verbose=0,
        )
    assert result["class_names"] == [str(i) for i in range(10)]
    assert result["model"].output.shape == (None, 10)
    assert len(result["history"]["val_loss"]) == 1
    assert np.isfinite(result["evaluation"]["loss"])
    assert os.path.exists(result["paths"]["plot"])


def test_finetune_mixed_precision_keeps_float32_predictions(shapes, tmp_path):
    train, val = shapes
    result = finetune(
        "PFResNet", train, val, str(tmp_path / "mixed"), weights=None, model_args=SMALL_RESNET,
        image_size=32, batch_size=32, epochs=1, mixed_precision=True, verbose=0,
    )
    model = result["model"]
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert np.isfinite(result["evaluation"]["loss"])


def test_finetune_cli_errors(tmp_path, shapes, capsys):
    from keras_pf_cli import main

    train, _ = shapes
    assert main(["finetune", "PFResNet50", train, "--weights", "none", "-o", str(tmp_path)]) == 2
    assert "validation folder" in capsys.readouterr().err
    assert main(["finetune", "NoSuchNet", train, "--val", train, "-o", str(tmp_path)]) == 2
    assert "Unknown model" in capsys.readouterr().err
    assert main(["finetune", "PFResNet50", str(tmp_path / "missing"), "--val", train,
                 "--weights", "none", "-o", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_only_the_chief_keeps_outputs():
    from types import SimpleNamespace

    from keras_pf.training.finetune import is_chief

    def strategy(cluster, task_type, task_id):
        spec = SimpleNamespace(as_dict=lambda: cluster)
        return SimpleNamespace(cluster_resolver=SimpleNamespace(
            cluster_spec=lambda: spec, task_type=task_type, task_id=task_id))

    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(SimpleNamespace())  # default / mirrored: no cluster
    assert is_chief(strategy(workers, "worker", 0))
    assert not is_chief(strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], **workers}
    assert is_chief(strategy(with_chief, "chief", 0))
    assert not is_chief(strategy(with_chief, "worker", 0))


# The input pipelines (keras_pf.training.data), which evaluation and calibration tools share.

def test_eval_dataset_matches_a_pil_reference(tmp_path):
    from keras_pf.training.data import eval_dataset

    rng = np.random.default_rng(0)
    # Smooth content, so that resampling-filter details stay small.
    y, x = np.mgrid[0:90, 0:150]
    pixels = np.stack([x * 1.5, y * 2.5, (x + y) * 0.8], -1).clip(0, 255).astype(np.uint8)
    for name in ("b", "a"):
        os.makedirs(tmp_path / name)
    Image.fromarray(pixels).save(tmp_path / "b" / "0.png")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "a" / "0.png")
    dataset, class_names = eval_dataset(str(tmp_path), image_size=56, crop_ratio=0.875, batch_size=4)
    assert class_names == ["a", "b"]  # sorted folder names
    images, labels = next(iter(dataset))
    assert images.shape == (2, 56, 56, 3) and images.dtype == "float32"
    assert labels.numpy().tolist() == [0, 1]
    raw_dataset, _ = eval_dataset(str(tmp_path), 56, 0.875, batch_size=4, preprocessing=None)
    raw, _ = next(iter(raw_dataset))
    np.testing.assert_allclose(images, keras_pf.preprocess_input(raw.numpy()), atol=1e-5)
    # torchvision's transform, by hand: shorter side to 64, centre crop 56. A crop one
    # pixel off differs by more than 1 grey level on average; the right one by ~0.3.
    resized = Image.fromarray(pixels).resize((int(150 * 64 / 90), 64), Image.BILINEAR)
    left, top = round((resized.width - 56) / 2), round((64 - 56) / 2)
    reference = np.asarray(resized, np.float32)[top:top + 56, left:left + 56]
    assert np.abs(raw[1].numpy() - reference).mean() < 0.6


def test_train_dataset_augments(shapes):
    from keras_pf.training.data import train_dataset

    train, _ = shapes
    dataset, class_names = train_dataset(train, image_size=(32, 40), batch_size=180, seed=0)
    first, labels = next(iter(dataset))
    second, _ = next(iter(dataset))
    assert first.shape == (180, 32, 40, 3) and class_names == sorted(SHAPES)
    assert sorted(np.bincount(labels.numpy()).tolist()) == [60, 60, 60]
    assert not np.allclose(np.sort(first.numpy().ravel()), np.sort(second.numpy().ravel()))


def test_data_sources_errors(tmp_path):
    from keras_pf.training.data import eval_dataset

    with pytest.raises(ValueError, match="has no subfolders"):
        eval_dataset(str(tmp_path))
    os.makedirs(tmp_path / "empty_class")
    with pytest.raises(ValueError, match="No images"):
        eval_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="tfds:NAME"):
        eval_dataset("tfds:")
    with pytest.raises(ValueError, match="interpolation"):
        eval_dataset(str(tmp_path), interpolation="cubic")


def test_head_phase_keeps_pretrained_backbone(shapes, tmp_path):
    """Weights from a file, head-only training: the backbone, BatchNorm statistics
    included, is exactly the loaded one afterwards; the head learned."""
    train, val = shapes
    keras.utils.set_random_seed(1)
    pretrained = keras_pf.PFResNet(include_top=False, pooling="avg", weights=None,
                                   input_shape=(32, 32, 3), **SMALL_RESNET)
    path = str(tmp_path / "backbone.weights.h5")
    pretrained.save_weights(path)
    result = finetune("PFResNet", train, val, str(tmp_path / "head"), weights=path,
                      model_args=SMALL_RESNET, image_size=32, batch_size=32, head_epochs=2,
                      epochs=0, learning_rate=1e-2, verbose=0)
    backbone = next(l for l in result["model"].layers if isinstance(l, keras.Model))
    for expected, actual in zip(pretrained.weights, backbone.weights):
        np.testing.assert_array_equal(np.array(expected), np.array(actual), err_msg=actual.path)
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]
