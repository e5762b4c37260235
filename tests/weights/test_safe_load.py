"""Hostile and broken `.keras` / `.weights.h5` files (issue 22): every way the package
loads one (`weights=`, `resolve.load_model_file` behind `keras-pf export` and
`gradcam`, the checkpoint `finetune --resume` continues from) fails with one line
naming the file and the reason; nothing in the file runs; the CLI exits 2 without a
traceback."""

import os
import shutil

import numpy as np
import pytest

import hostile_keras as H

SMALL = dict(block="max", depths=(1, 1, 1, 1), width_mult=0.25, input_shape=(64, 64, 3),
             classes=3)
MARKER = "/tmp/keras_pf_pwned"  # what the os.system probe would create


def small(weights=None):
    import keras_pf

    return keras_pf.PFResNet(**SMALL, weights=weights)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small genuine `.keras` file and its `.weights.h5`."""
    directory = tmp_path_factory.mktemp("saved")
    model = small()
    model.save(directory / "genuine.keras")
    model.save_weights(directory / "genuine.weights.h5")
    return directory


CONFIG_KINDS = {
    "os.system": (H.os_system, ["`os.system`", "not a class of Keras"]),
    "unknown class": (H.unknown_class, ["`keras.layers.NoSuchLayer`", "does not have"]),
    "Lambda with code": (H.lambda_with_code, ["Python bytecode", "Lambda"]),
}
WEIGHT_KINDS = {
    "missing weight": (H.drop_weight, ["missing `layers/conv2d/vars/0`"]),
    "mis-shaped weight": (H.reshape_weight, ["`layers/conv2d/vars/0` has shape (7, 7, 3, 65)"]),
}


def hostile(saved, tmp_path, kind):
    path = tmp_path / f"{kind.replace(' ', '_')}.keras"
    if kind in CONFIG_KINDS:
        return H.edit_config(saved / "genuine.keras", path, CONFIG_KINDS[kind][0]), CONFIG_KINDS[kind][1]
    return H.edit_weights(saved / "genuine.keras", path, WEIGHT_KINDS[kind][0]), WEIGHT_KINDS[kind][1]


def assert_one_line(error, path, needles):
    text = str(error)
    assert "\n" not in text and str(path) in text, text
    assert "Full config" not in text and "config=" not in text and len(text) < 600, text
    for needle in needles:
        assert needle in text, text


ALL_KINDS = list(CONFIG_KINDS) + list(WEIGHT_KINDS)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_load_model_names_the_file_and_the_reason(saved, tmp_path, kind):
    from keras_pf.models.resolve import load_model_file
    from keras_pf.weights.safe_load import ModelFileError

    path, needles = hostile(saved, tmp_path, kind)
    with pytest.raises(ModelFileError) as error:
        load_model_file(path)
    assert_one_line(error.value, path, needles)
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_weights_argument_names_the_file_and_the_reason(saved, tmp_path, kind):
    from keras_pf.weights.safe_load import ModelFileError

    path, needles = hostile(saved, tmp_path, kind)
    with pytest.raises(ModelFileError) as error:
        small(weights=str(path))
    assert_one_line(error.value, path, needles)
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("kind", list(WEIGHT_KINDS))
def test_weights_h5_with_a_missing_or_misshaped_weight(saved, tmp_path, kind):
    from keras_pf.weights.safe_load import ModelFileError

    path = shutil.copy(saved / "genuine.weights.h5", tmp_path / "edited.weights.h5")
    H.edit_h5(path, WEIGHT_KINDS[kind][0])
    with pytest.raises(ModelFileError) as error:
        small(weights=path)
    assert_one_line(error.value, path, WEIGHT_KINDS[kind][1])


def test_the_genuine_files_load(saved):
    from keras_pf.models.resolve import load_model_file

    image = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    loaded, _ = load_model_file(saved / "genuine.keras")
    reference = small(weights=str(saved / "genuine.weights.h5"))
    np.testing.assert_allclose(loaded.predict(image, verbose=0),
                               reference.predict(image, verbose=0), atol=1e-6)
    np.testing.assert_allclose(small(weights=str(saved / "genuine.keras")).predict(image, verbose=0),
                               reference.predict(image, verbose=0), atol=1e-6)


def test_a_registered_custom_class_is_allowed_an_unregistered_one_named(saved, tmp_path):
    """The allow-list follows Keras' registry: a class the loading program registered
    loads; the same class unregistered is named, not Keras' generic message."""
    import keras

    from keras_pf.weights.safe_load import ModelFileError, check_config, read_config

    def custom(config):
        layer = H.layers(config)[-1]  # the classifier: a Dense
        layer.update(module="my_project.layers", class_name="MyDense",
                     registered_name="my_project>MyDense")

    path = H.edit_config(saved / "genuine.keras", tmp_path / "custom.keras", custom)
    with pytest.raises(ModelFileError, match="`my_project.layers.MyDense`"):
        check_config(path, read_config(path))

    @keras.saving.register_keras_serializable(package="my_project")
    class MyDense(keras.layers.Dense):
        pass

    check_config(path, read_config(path))  # allowed now


@pytest.mark.parametrize("content, needle", [
    (b"not a zip at all", "not a readable .keras archive"),
    (None, "has no config.json"),
])
def test_not_an_archive_or_no_config(saved, tmp_path, content, needle):
    from keras_pf.models.resolve import load_model_file
    from keras_pf.weights.safe_load import ModelFileError

    path = tmp_path / "broken.keras"
    if content is None:
        members = H.read_members(saved / "genuine.keras")
        del members["config.json"]
        H.write_members(path, members)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError) as error:
        load_model_file(path)
    assert_one_line(error.value, path, [needle])


# --- the command line ------------------------------------------------------------------

def run_cli(capsys, *argv):
    """`keras-pf ARGV` in this process: (exit status, stderr)."""
    from keras_pf_cli import main

    try:
        status = main(list(argv))
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("command", ["gradcam", "export"])
def test_cli_on_the_os_system_probe_is_one_line_exit_2(saved, tmp_path, capsys, command):
    from PIL import Image

    path, _ = hostile(saved, tmp_path, "os.system")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    out = tmp_path / ("o.png" if command == "gradcam" else "o.tflite")
    argv = ([command, str(path), str(image), "-o", str(out)] if command == "gradcam"
            else [command, str(path), "-o", str(out)])
    status, err = run_cli(capsys, *argv)
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err and "`os.system`" in err and "nothing in it was executed" in err
    assert not out.exists() and not os.path.exists(MARKER)


# --- finetune --resume -----------------------------------------------------------------

def test_resume_from_a_broken_checkpoint_names_it(tmp_path):
    import keras

    from keras_pf.training.distributed import TrainingBackup
    from keras_pf.weights.safe_load import ModelFileError
    from keras_pf.weights import integrity

    def model():
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        m.compile("adam", "mse")
        return m

    saver = TrainingBackup(str(tmp_path))
    saver.set_model(model())
    saver.on_epoch_end(0, {"loss": 1.0})
    checkpoint = str(tmp_path / "epoch001.weights.h5")
    assert integrity.read_sidecar(checkpoint)["sha256"] == integrity.sha256_of(checkpoint)

    def resume():
        callback = TrainingBackup(str(tmp_path), first_epoch=0, restore_epoch=1)
        callback.set_model(model())
        callback.on_train_begin()

    resume()  # genuine: loads
    H.edit_h5(checkpoint, lambda f: f.__delitem__("layers/dense/vars/0"))
    with pytest.raises(integrity.IntegrityError) as error:  # its record no longer matches
        resume()
    assert_one_line(error.value, checkpoint, ["integrity record"])
    integrity.record(checkpoint)  # a missing weight with a matching record
    with pytest.raises(ModelFileError) as error:
        resume()
    assert_one_line(error.value, checkpoint, ["missing `layers/dense/vars/0`"])


# --- fine-tuning's model.keras, read back by export / gradcam / weights= -----------------

def test_a_keras_file_whose_integrity_record_disagrees_is_refused(saved, tmp_path, capsys):
    """Fine-tuning records `model.keras` when it writes it (`integrity.record`); a file
    changed since (64 bytes flipped in place, as a bad disk leaves it) is refused by
    every reader, naming it, before Keras opens it."""
    from keras_pf.models import resolve
    from keras_pf.weights import integrity

    path = tmp_path / "model.keras"
    shutil.copy(saved / "genuine.keras", path)
    integrity.record(path)
    resolve.load_model_file(path)  # matches its record: loads
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    with open(path, "r+b") as f:
        f.write(data)
    for load in (lambda: resolve.load_model_file(path), lambda: small(weights=str(path))):
        with pytest.raises(integrity.IntegrityError) as error:
            load()
        assert_one_line(error.value, path, ["its sha256", "integrity record"])
    status, err = run_cli(capsys, "export", str(path), "-o", str(tmp_path / "o.tflite"))
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(path) in err, err
    assert not (tmp_path / "o.tflite").exists()
