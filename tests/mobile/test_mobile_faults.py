"""Export under faults and bad input: arguments refused before any work, unreadable
calibration images named, flat folders accepted, the precision read back, and nothing
left behind by a killed export (temporary SavedModel, partial output)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_pf
from keras_pf_cli import main
from keras_pf.mobile import calibration, check, converter, export

SIZE = 32


@pytest.fixture(scope="module")
def tiny_model():
    return keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                             input_shape=(SIZE, SIZE, 3), classes=3)


def _png_folder(root, n, flat=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root if flat else root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("count", ["0", "-3"])
def test_int8_with_no_calibration_images_is_refused(count, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    code = main(["export", "PFResNet50Max", "--weights", "none", "--input-size", "32",
                 "--precision", "int8", "--num-calibration", count, "-o", str(out)])
    assert code == 2 and "--num-calibration" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("size", ["4096", "0", "-5"])
def test_absurd_input_sizes_are_refused_before_building(size, tmp_path, capsys):
    start = time.perf_counter()
    code = main(["export", "PFResNet50Max", "--weights", "none", "--input-size", size,
                 "-o", str(tmp_path / "m.tflite")])
    assert code == 2 and "--input-size" in capsys.readouterr().err
    assert time.perf_counter() - start < 5  # refused, not built
    assert os.listdir(tmp_path) == []


def test_unwritable_output_is_refused_before_converting(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    start = time.perf_counter()
    code = main(["export", "PFResNet50Max", "--weights", "none", "--input-size", "32",
                 "-o", str(blocker / "sub" / "m.tflite")])
    assert code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert time.perf_counter() - start < 5  # before building and converting


def test_flat_calibration_folder_is_accepted(tmp_path):
    flat = _png_folder(tmp_path / "flat", 5)
    images, note = calibration.calibration_images(str(flat), (SIZE, SIZE), raw_pixels=True, num_images=4)
    assert images.shape == (4, SIZE, SIZE, 3) and 0 <= images.min() and images.max() <= 255
    nested = _png_folder(tmp_path / "nested", 6, flat=False)  # both classes sampled
    images, _ = calibration.calibration_images(str(nested), (SIZE, SIZE), raw_pixels=True, num_images=2)
    assert len(images) == 2


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"plain text"])
def test_unreadable_calibration_image_is_named_before_converting(content, tmp_path, capsys):
    folder = _png_folder(tmp_path / "cal", 3)
    (folder / "broken.png").write_bytes(content)
    out = tmp_path / "m.tflite"
    code = main(["export", "PFResNet50Max", "--weights", "none", "--input-size", "32",
                 "--precision", "int8", "--calibration", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "broken.png" in err and "Traceback" not in err
    assert not out.exists()


def test_precision_is_read_back_and_a_float_int8_file_is_refused(tiny_model, tmp_path, monkeypatch):
    float_path = export.export_tflite(tiny_model, tmp_path / "f.tflite")
    check.check_precision(float_path, "float32")
    with pytest.raises(ValueError, match="not int8"):
        check.check_precision(float_path, "int8")
    # a converter that silently falls back to float for an int8 request
    content = open(float_path, "rb").read()
    monkeypatch.setattr(converter, "convert", lambda model, configure, run: content)
    with pytest.raises(ValueError, match="not int8"):
        export.export_tflite(tiny_model, tmp_path / "q.tflite", "int8",
                             calibration=np.zeros((2, SIZE, SIZE, 3), "float32"))
    assert not (tmp_path / "q.tflite").exists()


KILLED_EXPORT = """
import os, sys, keras_pf
from keras_pf.mobile import converter, export
model = keras_pf.PFResNet(block="max", depths=(1, 1, 1, 1), width_mult=0.25, weights=None,
                          input_shape=(32, 32, 3), classes=3)
convert = converter.convert
def announced(*args):  # tells the test that the conversion has begun
    open(sys.argv[2], "w").close()
    return convert(*args)
converter.convert = announced
export.export_tflite(model, sys.argv[1])
"""


def _folders(tmpdir):
    """Every folder under `tmpdir` but the per-user private folder itself (keras_pf.tempfiles)."""
    private = f"keras_pf-{os.getuid()}"
    return [os.path.relpath(os.path.join(root, name), tmpdir)
            for root, dirs, _ in os.walk(tmpdir) for name in dirs if name != private]


def test_killed_export_leaves_nothing_after_the_next_run(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "m.tflite"
    started = tmp_path / "converting"
    env = {**os.environ, "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
               keras_pf.__file__)), os.environ.get("PYTHONPATH")]))}
    victim = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(out), str(started)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not started.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # inside the tracing and conversion (about 0.5 s here)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the export ended before it was killed"
    # killed while converting: no output, nothing beside it, no temporary folder (the
    # conversion needs none; the output is written unnamed and linked when complete)
    assert not out.exists()
    assert not out.parent.exists() or os.listdir(out.parent) == []
    assert _folders(tmpdir) == []
    partial = out.parent / (".tmp_abc" + out.name)  # as a kill during the final write leaves
    out.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"partial")
    rerun = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(out), str(started)], env=env,
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert out.exists() and not partial.exists()
    assert _folders(tmpdir) == []


def test_finetune_mobile_options_are_checked_before_training(tmp_path, capsys):
    assert main(["finetune", "PFResNet50", str(tmp_path / "no_such_folder"), "--qat-epochs", "1",
                 "-o", str(tmp_path / "run")]) == 2
    assert "--export int8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "PFResNet50", str(tmp_path), "--qat-epochs", "-1", "--export", "int8"])
    assert exit_info.value.code == 2 and "--qat-epochs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
