"""Bad input and bad luck: every case ends in one line naming the file or argument and a
non-zero exit, with no traceback and nothing left behind. (Downloads: see
test_weights_download.py.)"""

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_RESNET

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_RESNET = dict(TINY_RESNET, block="max")


def run_cli(capsys, *argv):
    """`keras-pf ARGV` in this process: (exit status, stderr)."""
    import keras_pf_cli as cli

    try:
        status = cli.main(list(argv))
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def assert_one_line_usage_error(capsys, argv, *needles):
    status, err = run_cli(capsys, *argv)
    assert status == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    last = err.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, err
    return last


# --- the parser ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--epochs", "-1"], "--epochs"),
    (["--image-size", "0"], "--image-size"),
    (["--dropout", "1.5"], "--dropout"),
    (["--model-args", "{depths: 1"], "--model-args"),
    (["--model-args", "[1, 2]"], "--model-args"),
])
def test_finetune_arguments_are_checked_by_the_parser(capsys, tmp_path, argv, needle):
    assert_one_line_usage_error(capsys, ["finetune", "PFResNet", str(tmp_path), *argv], needle)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, needle", [  # (bad --model-args: tests/weights/test_convert.py)
    (["--model-args", "{depths: 1"], "not valid JSON"),
    (["--input-size", "0"], "--input-size"),
])
def test_convert_arguments_are_checked_by_the_parser(capsys, tmp_path, argv, needle):
    output = tmp_path / "out.weights.h5"
    assert_one_line_usage_error(capsys, ["convert", "PFResNet", str(tmp_path / "missing.pth"),
                                         str(output), *argv], needle)
    assert os.listdir(tmp_path) == []


def test_finetune_model_args_the_builder_does_not_take(capsys, tmp_path):
    out = tmp_path / "out"
    last = assert_one_line_usage_error(
        capsys, ["finetune", "PFResNet", str(tmp_path), "--val", str(tmp_path), "-o", str(out),
                 "--model-args", '{"depth": 3}'], "depth", "PFResNet")
    assert "depths" in last  # what it does take
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--class-index", "-1"], "--class-index"),
    (["--crop-ratio", "0"], "--crop-ratio"),
    (["--crop-ratio", "5"], "--crop-ratio"),
])
def test_gradcam_arguments_are_checked_by_the_parser(capsys, tmp_path, argv, needle):
    assert_one_line_usage_error(capsys, ["gradcam", "PFResNet50", "x.png", "-o", str(tmp_path / "o.png"),
                                         *argv], needle)


def test_missing_subcommand_is_a_usage_error(capsys):
    assert_one_line_usage_error(capsys, [], "command")


def test_demo_runs_must_be_positive(capsys):
    assert_one_line_usage_error(capsys, ["demo", "--runs", "-1"], "--runs")


@pytest.mark.parametrize("argv, needle", [
    (["--runs", "0"], "--runs"), (["--threads", "-2"], "--threads"), (["--image-size", "abc"], "--image-size"),
])
def test_benchmark_arguments_are_checked_by_the_parser(capsys, argv, needle):
    assert_one_line_usage_error(capsys, ["benchmark", *argv], needle)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    import keras_pf

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras_pf.PFResNet(**SMALL_RESNET, weights=None, classes=3, input_shape=(64, 64, 3)).save(path)
    return str(path)


def test_gradcam_class_index_beyond_the_model_classes(capsys, tmp_path, tiny_classifier):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    assert_one_line_usage_error(capsys, ["gradcam", tiny_classifier, str(image), "-o", str(tmp_path / "o.png"),
                                         "--class-index", "5000"], "--class-index 5000", "3 classes")
    assert sorted(os.listdir(tmp_path)) == ["x.png"]


def decompression_bomb(path, side=16000):
    """A valid grayscale PNG of side x side black pixels: a few hundred KB on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def test_gradcam_refuses_a_decompression_bomb_before_decoding(capsys, tmp_path, tiny_classifier):
    bomb = decompression_bomb(str(tmp_path / "bomb.png"))
    assert os.path.getsize(bomb) < 1 << 20
    assert_one_line_usage_error(capsys, ["gradcam", tiny_classifier, bomb, "-o", str(tmp_path / "o.png")],
                                bomb, "pixels")


# --- image folders ---------------------------------------------------------------------

def _image_folder(root, per_class=3):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(root / label, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / label / f"{i}.jpg")
    return root


def _broken_images(root):
    good_jpeg = (root / "a" / "0.jpg").read_bytes()
    good_png = (root / "a" / "0.png").read_bytes()
    broken = {
        root / "a" / "empty.jpg": b"",
        root / "a" / "text.jpg": b"this is not an image\n",
        root / "b" / "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        root / "b" / "truncated.png": good_png[: len(good_png) - 30],
    }
    for path, data in broken.items():
        path.write_bytes(data)
    return [str(p) for p in broken]


def _count(dataset):
    return sum(int(y.shape[0]) for _, y in dataset)


def test_unreadable_images_are_skipped_and_named(tmp_path):
    from keras_pf.training.data import UnreadableImageWarning, eval_dataset, train_dataset

    root = _image_folder(tmp_path / "data")
    broken = _broken_images(root)
    with pytest.warns(UnreadableImageWarning) as caught:
        train, _ = train_dataset(str(root), image_size=32, batch_size=4)
        assert _count(train) == 12
    message = str(caught[0].message)
    assert "skipping 4 of 16" in message
    for path in broken:
        assert path in message, message
    with pytest.warns(UnreadableImageWarning):
        evaluation, _ = eval_dataset(str(root), image_size=32, batch_size=4)
        assert _count(evaluation) == 12


def _corrupt_inside_png(path, size=40):
    """A PNG whose header, chunk CRCs and end are intact but whose pixel stream is not
    zlib data: only decoding finds out."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", b"not zlib data at all" * 8) + chunk(b"IEND", b""))


def test_image_corrupt_inside_is_skipped_and_epochs_keep_their_length(tmp_path):
    """The image is dropped while reading; the epoch still has as many images as the
    folder (its place taken by another image), so Keras counts steps right: one epoch of
    12 images in batches of 4 is 3 optimizer steps (with an epoch of unknown length,
    Keras 3.15 takes 4 and warns that the input ran out of data)."""
    import keras
    import tensorflow as tf

    from keras_pf.training.data import train_dataset

    root = _image_folder(tmp_path / "data", per_class=3)
    (root / "a" / "0.png").unlink()
    _corrupt_inside_png(root / "a" / "0.png")
    with pytest.raises(tf.errors.InvalidArgumentError):  # it really is unreadable
        tf.io.decode_png(tf.io.read_file(str(root / "a" / "0.png")))
    train, _ = train_dataset(str(root), image_size=32, batch_size=4, preprocessing=None)
    assert int(train.cardinality()) == 3
    assert _count(train) == 12
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "Your input ran out of data"
        model.fit(train, epochs=2, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == 6


def test_decompression_bomb_in_an_image_folder_is_skipped_without_decoding(tmp_path):
    import resource

    from keras_pf.training.data import UnreadableImageWarning, train_dataset

    root = _image_folder(tmp_path / "data", per_class=1)
    bomb = decompression_bomb(str(root / "a" / "bomb.png"))
    with pytest.warns(UnreadableImageWarning, match="bomb.png: .*pixels"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        train, _ = train_dataset(str(root), image_size=32, batch_size=4)
        assert _count(train) == 4
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 500, (bomb, grown_mib)  # decoding it would take 768 MiB


def test_finetune_on_a_folder_with_only_unreadable_images_says_so(capsys, tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        os.makedirs(root / label)
        (root / label / "x.jpg").write_bytes(b"")
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_one_line_usage_error(capsys, ["finetune", "PFResNet", str(root), "--val", str(root),
                                             "-o", str(out), "--weights", "none",
                                             "--model-args", json.dumps(SMALL_RESNET)], str(root))
    assert not out.exists()


def test_nan_loss_stops_the_run_with_an_error_and_no_checkpoint(capsys, tmp_path):
    root = _image_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "out"
    status, err = run_cli(capsys, "finetune", "PFResNet", str(root), "--val", str(root), "-o", str(out),
                          "--weights", "none", "--model-args", json.dumps(SMALL_RESNET), "--image-size", "32",
                          "--batch-size", "4", "--epochs", "2", "--lr", "1e30", "--quiet")
    assert status != 0, err
    assert "diverged" in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not out.exists() or not any(out.rglob("*.weights.h5"))
    assert not (out / "checkpoints").exists() or os.listdir(out / "checkpoints")


# --- weights files ---------------------------------------------------------------------

def _small_model():
    import keras_pf

    return keras_pf.PFResNet(**SMALL_RESNET, weights=None, classes=3, input_shape=(32, 32, 3))


def test_truncated_weights_file_is_named(tmp_path):
    import keras_pf

    path = tmp_path / "w.weights.h5"
    _small_model().save_weights(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=f"{path} is not a readable HDF5 weights file"):
        keras_pf.PFResNet(**SMALL_RESNET, weights=str(path), classes=3, input_shape=(32, 32, 3))


def test_text_file_as_weights_lists_the_accepted_kinds(tmp_path):
    import keras_pf

    path = tmp_path / "weights.txt"
    path.write_text("not weights\n")
    with pytest.raises(ValueError) as error:
        keras_pf.PFResNet(**SMALL_RESNET, weights=str(path), classes=3, input_shape=(32, 32, 3))
    for needle in (str(path), ".weights.h5", ".keras", ".pth"):
        assert needle in str(error.value)


def test_missing_weights_file_says_not_found(tmp_path):
    import keras_pf

    path = tmp_path / "nowhere" / "w.weights.h5"
    with pytest.raises(ValueError, match=f"weights file not found: {path}"):
        keras_pf.PFResNet(**SMALL_RESNET, weights=str(path), classes=3, input_shape=(32, 32, 3))


# --- tfds, for real, offline ---------------------------------------------------------

TINY_BUILDER = '''
import numpy as np
import tensorflow_datasets as tfds


class KerasPfTinyImages(tfds.core.GeneratorBasedBuilder):
    """Ten generated images, two classes: a dataset prepared without network."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["dark", "light"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6), "validation": self._generate_examples(4)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((40, 48, 3), 40 * i, np.uint8), "label": i % 2}
'''


def test_tfds_source_through_the_real_builder_offline(tmp_path, monkeypatch):
    """tfds.builder / download_and_prepare / as_dataset on a dataset defined in a package,
    as tfds' own datasets are (that path imports importlib_resources)."""
    import importlib

    package = tmp_path / "keras_pf_tfds_fixture"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny_images.py").write_text(TINY_BUILDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("keras_pf_tfds_fixture.tiny_images")

    from keras_pf.training.data import eval_dataset, train_dataset

    data_dir = str(tmp_path / "tfds")
    evaluation, names = eval_dataset("tfds:keras_pf_tiny_images", image_size=32, batch_size=4,
                                     data_dir=data_dir, preprocessing=None)
    assert names == ["dark", "light"]
    labels = np.concatenate([y.numpy() for _, y in evaluation])
    assert labels.tolist() == [0, 1, 0, 1] or sorted(labels.tolist()) == [0, 0, 1, 1]
    train, _ = train_dataset("tfds:keras_pf_tiny_images", image_size=32, batch_size=4, data_dir=data_dir)
    assert _count(train) == 6


# --- the command line ------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["weights", "--help"], ["demo", "--help"], ["convert", "--help"],
                                  ["gradcam", "--help"], ["benchmark", "--help"], ["finetune", "--help"],
                                  ["export", "--help"], ["hub-preset", "--help"]])
def test_help_does_not_import_tensorflow(argv):
    # Started as the command starts (python -m keras_pf_cli); -X importtime lists every
    # module the interpreter imports on stderr.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_pf_cli", *argv],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO),
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: keras-pf" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert {"keras_pf_cli", "argparse"} <= imported  # the listing is read right
    assert "keras_pf" not in imported  # nor the library, which imports Keras
    assert not {"tensorflow", "keras"} & imported


def test_import_registers_layers_for_saved_models(tmp_path):
    """`import keras_pf` then keras.saving.load_model: the custom layers of a saved ViT
    (PositionEmbedding, the LayerNorm) are found without touching a keras_pf name."""
    import keras
    import keras_pf

    model = keras_pf.PFViT(embed_dim=32, depth=2, num_heads=2, patch_size=16, mlp_ratio=2.0,
                           input_shape=(32, 32, 3), classes=3, weights=None)
    path = str(tmp_path / "vit.keras")
    model.save(path)
    script = f"import keras_pf, keras; keras.saving.load_model({path!r}); print('loaded')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert result.stdout.strip().endswith("loaded"), result.stderr[-2000:]


def test_commands_print_no_tensorflow_log_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    result = subprocess.run([sys.executable, "-m", "keras_pf_cli", "gradcam", "PFResNet50", "missing.png",
                             "-o", str(tmp_path / "o.png")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "keras-pf gradcam: error: image not found: missing.png"], result.stderr
