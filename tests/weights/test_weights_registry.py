"""The weights registry table, its rewriting by tools/convert_weights.py, the Google Drive
path (gdown replaced by a local stand-in: no network) and the keras.applications checks."""

import copy
import hashlib
import importlib.util
import json
import pathlib
import shutil

import pytest

from conftest import DATA, ParityCase, load_tool

from keras_pf.weights import cache

CASE = "resnet_hybrid_64"

# The paper's published checkpoints (Google Drive id, top-1, top-5), from its README.
PUBLISHED = {
    ("pf_resnet50_max", "paper"): ("1MoCdVLPau4XuI0BVGEwDkiwibpybqWTX", 74.3, 92.0),
    ("pf_resnet50_hybrid", "paper"): ("1CyajEQUfWo9oetqcIhexVjfRXU-iGHk1", 77.1, 93.1),
    ("pf_resnet50_max", "long"): ("1TQfwMXENn7s78Myc58svKVpHi5OVsdGX", 75.5, 92.1),
    ("pf_resnet50_hybrid", "long"): ("1f5fOwEItFITqzofvQ6d-kLLOTs-c1k3o", 78.0, 93.5),
    ("pf_vit_small", "paper"): ("19lfagLJDXWvVHcb8Qm_U4_A_Kr7qYLv7", None, None),
    ("pf_pit_small", "paper"): ("1S9JJM2WGtDtpo-6Me7Ak74nJOlOeBKeH", None, None),
}
ORIGINAL_CONSTRUCTOR = {"pf_resnet50_max": "resnet50_max", "pf_resnet50_hybrid": "resnet50_hybrid",
                        "pf_vit_small": "vit_s_max", "pf_pit_small": "pit_s_max"}


@pytest.fixture
def registry(monkeypatch, tmp_path):
    from keras_pf.weights import cache, registry

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(registry.MIRROR_ENV, raising=False)
    monkeypatch.setattr(registry, "WEIGHTS", copy.deepcopy(registry.WEIGHTS))
    return registry


def test_table_has_every_published_checkpoint_with_its_figures(registry):
    import keras_pf

    tags = {(weights_id, tag): info for weights_id, tag, _, info in registry.entries()}
    assert set(tags) == set(PUBLISHED)
    for (weights_id, tag), (drive_id, top1, top5) in PUBLISHED.items():
        info = tags[weights_id, tag]
        assert info["source"] == f"gdrive:{drive_id}"
        assert (info["reported"]["top1"], info["reported"]["top5"]) == (top1, top5)
        assert info["file"] == f"{weights_id}_{tag}.weights.h5"
    for weights_id, entry in registry.WEIGHTS.items():
        assert entry["model"] in keras_pf.MODELS
        original = json.loads((DATA / "parity_keys" / f"{ORIGINAL_CONSTRUCTOR[weights_id]}.json").read_text())
        assert entry["params"] == original["parameters"]


def test_transformer_figures_depend_on_an_unstated_recipe(registry):
    for weights_id, by_recipe in (("pf_vit_small", {"plain": 74.2, "cutmix": 77.3, "deit": 80.0}),
                                  ("pf_pit_small", {"plain": 75.7, "cutmix": 78.1, "deit": 80.8})):
        reported = registry.WEIGHTS[weights_id]["tags"]["paper"]["reported"]
        assert reported["top1_by_recipe"] == by_recipe and reported["recipe"] == "unknown"


def test_imagenet_is_the_best_checkpoint_and_preprocessing_matches_training(registry):
    for weights_id, entry in registry.WEIGHTS.items():
        _, best, _ = registry.resolve(weights_id, "imagenet")
        top1 = {tag: info["reported"]["top1"] or 0 for tag, info in entry["tags"].items()}
        assert top1[best] == max(top1.values())
        pre = registry.preprocessing(weights_id)
        assert (pre["image_size"], pre["crop_ratio"]) == (224, 0.875)
        assert pre["interpolation"] == ("bilinear" if "resnet" in weights_id else "bicubic")


def test_cache_key_is_weights_id_and_tag(registry, tmp_path):
    assert cache.cached_weights_path("pf_resnet50_hybrid", "imagenet") is None
    path = pathlib.Path(cache.weights_path("pf_resnet50_hybrid", "imagenet"))
    assert path == tmp_path / "keras_home/models/keras_pf/pf_resnet50_hybrid_long.weights.h5"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert cache.cached_weights_path("pf_resnet50_hybrid", "imagenet") == str(path)
    assert cache.cached_weights_path("pf_resnet50_hybrid", "nope") is None


def test_unknown_tags_and_models_name_the_choices(registry):
    import keras_pf

    with pytest.raises(ValueError, match="tags: imagenet, long, paper"):
        registry.resolve("pf_resnet50_max", "short")
    with pytest.raises(ValueError, match="No published weights"):
        keras_pf.PFResNet(depths=(1, 1, 1, 1), width_mult=0.25, weights="imagenet",
                          input_shape=(64, 64, 3))


def test_classes_other_than_1000_with_imagenet_weights_fail_as_in_keras():
    import keras

    import keras_pf

    with pytest.raises(ValueError, match="`classes` should be 1000") as ours:
        keras_pf.PFResNet50(weights="imagenet", include_top=True, classes=10)
    with pytest.raises(ValueError) as theirs:
        keras.applications.ResNet50(weights="imagenet", include_top=True, classes=10)
    assert str(ours.value).split("Received")[0] == str(theirs.value).split("Received")[0]


def test_manual_steps_name_the_drive_file_and_the_import_command(registry):
    from keras_pf.weights import download

    text = cache.manual_steps("pf_vit_small", "imagenet", ["original checkpoint: offline"])
    assert "https://drive.google.com/uc?id=19lfagLJDXWvVHcb8Qm_U4_A_Kr7qYLv7" in text
    assert "keras-pf weights import PATH --model pf_vit_small --tag paper" in text
    assert "weights=PATH" in text and "offline" in text


def _register_drive_entry(registry):
    registry.register_weights("test_drive", "tiny", "gdrive:FAKE_DRIVE_ID",
                              model=ParityCase(CASE).build, imagenet=True)


# gdown runs in a child process (keras_pf.weights.download._GDOWN_CHILD): the stand-in is a
# `gdown` package placed first on the child's PYTHONPATH, acting as $FAKE_GDOWN says.
FAKE_GDOWN = """
import os, pathlib, shutil


class FileURLRetrievalError(Exception):
    pass


class DownloadError(Exception):
    pass


def download(url=None, output=None, quiet=False, **kwargs):
    behaviour = os.environ["FAKE_GDOWN"]
    with open(os.environ["FAKE_GDOWN_CALLS"], "a") as calls:
        calls.write(url + "\\n")
    if behaviour.startswith("copy:"):
        shutil.copyfile(behaviour[5:], output)
        return output
    if behaviour == "raises":
        raise FileURLRetrievalError("Too many users have viewed this file")
    if behaviour == "leaves_partial":  # as gdown does, for resuming
        pathlib.Path(output + "abcdefgh.part").write_bytes(b"half a checkpoint")
        raise DownloadError("Download is incomplete")
    if behaviour == "quota_page":
        pathlib.Path(output).write_text("<!DOCTYPE html><html>Quota exceeded</html>")
        return output
    return None
"""


@pytest.fixture
def fake_gdown(monkeypatch, tmp_path):
    """Set the stand-in's behaviour; returns the file listing the URLs it was asked for."""
    import os

    package = tmp_path / "fake_gdown"
    package.mkdir()
    (package / "gdown.py").write_text(FAKE_GDOWN)
    calls = tmp_path / "gdown_calls.txt"
    calls.write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(package)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("FAKE_GDOWN_CALLS", str(calls))

    def behave(behaviour):
        monkeypatch.setenv("FAKE_GDOWN", behaviour)
        return calls

    return behave


def test_google_drive_source_goes_through_gdown(registry, fake_gdown):
    import numpy as np

    from keras_pf.weights import download

    calls = fake_gdown("copy:" + str(ParityCase(CASE).checkpoint))
    _register_drive_entry(registry)
    path = cache.fetch("test_drive", "imagenet", progress=False)
    assert calls.read_text().split() == [download.GDRIVE_URL.format(id="FAKE_DRIVE_ID")]
    case = ParityCase(CASE)
    model = case.build()
    model.load_weights(path)
    np.testing.assert_allclose(np.asarray(model(case.input_nhwc)), case.logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("behaviour", ["quota_page", "raises", "returns_none", "leaves_partial"])
def test_google_drive_failures_are_clear_and_leave_no_file(registry, fake_gdown, behaviour):
    from keras_pf.weights import download

    calls = fake_gdown(behaviour)
    _register_drive_entry(registry)
    with pytest.raises(download.WeightsDownloadError) as error:
        cache.fetch("test_drive", "imagenet", progress=False)
    assert calls.read_text().split()  # the stand-in ran
    message = str(error.value)
    assert "https://drive.google.com/uc?id=FAKE_DRIVE_ID" in message
    assert "keras-pf weights import PATH --model test_drive --tag tiny" in message
    assert {"quota_page": "web page", "raises": "Too many users",
            "returns_none": "could not download",
            "leaves_partial": "incomplete"}[behaviour] in message
    folder = pathlib.Path(cache.cache_dir())
    assert [p.name for p in folder.rglob("*") if not p.name.endswith(".lock")] == []


def test_table_source_round_trips(registry, tmp_path):
    assert json.loads(registry.format_table()) == registry.WEIGHTS
    assert json.loads(pathlib.Path(registry.MANIFEST).read_text()) == registry.WEIGHTS

    copy_path = tmp_path / "manifest_copy.json"
    shutil.copyfile(registry.MANIFEST, copy_path)
    table = copy.deepcopy(registry.WEIGHTS)
    table["pf_resnet50_max"]["tags"]["long"].update(size=123, sha256="ab" * 32)
    registry.write_table(table, str(copy_path))
    assert registry._read_manifest(copy_path) == table
    # Only the table changed: every other entry is as it was.
    before = json.loads(pathlib.Path(registry.MANIFEST).read_text())
    after = json.loads(copy_path.read_text())
    assert {k: v for k, v in before.items() if k != "pf_resnet50_max"} == \
        {k: v for k, v in after.items() if k != "pf_resnet50_max"}


def test_convert_weights_tool_converts_a_folder_and_records_size_and_sha256(registry, tmp_path):
    from keras_pf.weights.convert import save_converted

    tool = load_tool("convert_weights")
    registry.register_weights("test_conv", "tiny", "gdrive:DRIVEID123", model=ParityCase(CASE).build)
    folder = tmp_path / "originals"
    folder.mkdir()
    checkpoint = ParityCase(CASE).checkpoint
    shutil.copyfile(checkpoint, folder / "download_DRIVEID123.pth")  # matched by Drive id
    shutil.copyfile(checkpoint, folder / "someone_elses.pth")  # not in the registry
    done, unmatched = tool.convert_folder(str(folder), str(tmp_path / "weights"), progress=lambda _: None)
    output = tmp_path / "weights" / "test_conv_tiny.weights.h5"
    assert done == [("test_conv", "tiny", str(output))] and unmatched == ["someone_elses.pth"]
    info = registry.WEIGHTS["test_conv"]["tags"]["tiny"]
    data = output.read_bytes()
    assert info["size"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # A user converting the same original gets the same bytes, so a mirror is verifiable.
    again = tmp_path / "again.weights.h5"
    save_converted(ParityCase(CASE).build(), str(checkpoint), str(again))
    assert hashlib.sha256(again.read_bytes()).hexdigest() == info["sha256"]
    assert tool.match_checkpoint("pf_resnet50_hybrid_long.pth", registry.WEIGHTS) == ("pf_resnet50_hybrid", "long")


def test_cli_list_shows_every_checkpoint(registry, capsys):
    import keras_pf_cli as cli

    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for (weights_id, tag), (_, top1, _) in PUBLISHED.items():
        line = next(l for l in out.splitlines() if l.startswith(weights_id) and f" {tag}" in l)
        assert (f"{top1:.1f}" in line) if top1 else ("?" in line)


@pytest.mark.parametrize("case", ["vit_max_64", "pit_max_64"])
def test_conversion_is_byte_reproducible_within_a_process(case, tmp_path):
    """Auto-numbered layer names (attention's softmax/dropout) must not leak into the file."""
    from keras_pf.weights.convert import save_converted

    parity = ParityCase(case)
    digests = set()
    for i in range(2):
        path = tmp_path / f"{i}.weights.h5"
        save_converted(parity.build(), str(parity.checkpoint), str(path))
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
