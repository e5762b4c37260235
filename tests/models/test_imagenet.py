"""preprocess_input, decode_predictions (no download), and the demo command."""

import json

import numpy as np
import pytest

import keras_pf
from keras_pf_cli import main as cli_main


def test_preprocess_matches_the_original_normalization():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 5, 5, 3)).astype("uint8")
    # torchvision: ToTensor (x / 255) then Normalize(mean, std), per channel
    expected = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(keras_pf.preprocess_input(x), expected, atol=1e-5)
    import keras

    np.testing.assert_allclose(np.asarray(keras_pf.preprocess_input(keras.ops.convert_to_tensor(x))),
                               expected, atol=1e-5)
    with pytest.raises(ValueError, match="channels_last"):
        keras_pf.preprocess_input(x, data_format="channels_first")


def test_decode_predictions_uses_the_shipped_index(monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("decode_predictions must not download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    preds = np.zeros((2, 1000), "float32")
    preds[0, [207, 1, 999]] = [0.7, 0.2, 0.1]
    preds[1, 954] = 1.0
    decoded = keras_pf.decode_predictions(preds, top=3)
    assert [d[0] for d in decoded[0]] == ["n02099601", "n01443537", "n15075141"]
    assert [d[2] for d in decoded[0]] == pytest.approx([0.7, 0.2, 0.1])
    assert decoded[0][0][1] == "golden_retriever" and decoded[1][0][1] == "banana"
    with pytest.raises(ValueError, match=r"\(samples, 1000\)"):
        keras_pf.decode_predictions(np.zeros((2, 10)))


def test_shipped_index_agrees_with_the_lemma_list():
    """Two files of different origin inside the package give the same wordnet ids."""
    import pathlib

    data = pathlib.Path(keras_pf.__file__).parent / "data"
    index = json.loads((data / "imagenet_class_index.json").read_text())
    lines = (data / "imagenet_lemmas.tsv").read_text().strip().splitlines()
    rows = [line.split("\t") for line in lines if line.split("\t")[0].isdigit()]
    assert len(index) == 1000 and len(rows) == 1000
    assert all(index[r[0]][0] == r[1] for r in rows)


def test_demo_runs_and_says_it_uses_random_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # empty cache
    assert cli_main(["demo", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out
    assert "keras.applications.ResNet50" in out and "PF-ResNet50" in out
    assert "17.33" in out  # parameters of R50-hybrid, in millions
