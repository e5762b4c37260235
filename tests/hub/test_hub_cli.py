"""`keras-pf hub-preset`: writes an upload-ready preset folder with the weights in it;
bad input is one line and exit status 2, and leaves nothing behind."""

import os

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import keras_pf  # noqa: E402
import keras_pf.hub  # noqa: E402
from keras_pf_cli import main  # noqa: E402


def test_writes_a_preset_with_the_models_weights(tmp_path, capsys):
    model = keras_pf.PFPiTTiny(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    weights = str(tmp_path / "pit.weights.h5")
    model.save_weights(weights)
    output = str(tmp_path / "preset")
    assert main(["hub-preset", "PFPiTTiny", "-o", output, "--weights", weights, "--input-size", "64"]) == 0
    assert "wrote" in capsys.readouterr().out
    files = set(os.listdir(output))
    assert {"config.json", "model.weights.h5", "task.json", "task.weights.h5", "preprocessor.json",
            "image_converter.json", "metadata.json"} <= files
    from keras_pf._compat.keras_hub import preset_folder_is_uploadable

    preset_folder_is_uploadable(output)  # what keras_hub.upload_preset checks first
    task = keras_hub.models.ImageClassifier.from_preset(output)
    from keras_pf.training.data import eval_transform

    image = np.random.RandomState(1).randint(0, 256, (90, 70, 3)).astype("uint8")
    expected = model(keras_pf.preprocess_input(np.asarray(eval_transform(image, 64, 0.875, "bicubic"))[None]))
    # the preset's preprocessor and network, called eagerly (predict() would trace both
    # for ~2 s; test_hub_presets runs predict on a preset's raw image)
    x = task.preprocessor.image_converter(image[None])
    np.testing.assert_allclose(keras.Model(task.input, task.output)(x), np.asarray(expected), atol=1e-4)


@pytest.mark.parametrize("argv, needle", [
    (["PFResNet9000"], "Unknown model 'PFResNet9000'"),
    (["PFPiTTiny", "--weights", "missing.weights.h5"], "weights file not found"),
    (["PFPiTTiny", "--weights", "nosuchtag", "--input-size", "64"], "No published weights for pf_pit_tiny"),
    (["PFResNet50Hybrid", "--weights", "none", "--input-size", "100"], "multiples of 32"),
    (["PFPiTTiny", "--input-size", "0"], "must be at least 1"),
])
def test_bad_arguments_exit_2_and_leave_nothing(tmp_path, capsys, argv, needle):
    output = str(tmp_path / "preset")
    if needle.startswith("must"):  # the parser's own check
        with pytest.raises(SystemExit) as exit_:
            main(["hub-preset", *argv, "-o", output])
        assert exit_.value.code == 2
    else:
        assert main(["hub-preset", *argv, "-o", output]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == []


def test_an_existing_folder_is_refused_untouched(tmp_path, capsys):
    output = tmp_path / "preset"
    output.mkdir()
    (output / "mine.txt").write_text("keep")
    assert main(["hub-preset", "PFPiTTiny", "--weights", "none", "-o", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert os.listdir(output) == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["preset"]

