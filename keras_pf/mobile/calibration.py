"""Int8 calibration (and `--check`) images: a folder, `tfds:NAME`, an array, or random
pixels with a warning, as the exported file consumes them."""

import os
import warnings

import numpy as np


class CalibrationWarning(UserWarning):
    """Int8 calibration is not on real images: the int8 accuracy will suffer."""



def _image_files(directory):
    """Image files of a folder: class subfolders or flat (sorted, one pass)."""
    from keras_pf.training.data import IMAGE_EXTENSIONS, image_files

    found = image_files(directory)
    if not found:
        raise ValueError(f"Calibration folder {directory!r} has no images "
                         f"({', '.join(IMAGE_EXTENSIONS)}), neither flat nor in subfolders.")
    return found


def _folder_images(directory, image_size, num_images):
    """Up to `num_images` images of the folder (spread over it, so every class subfolder
    is sampled), as float32 [0, 255] pixels (resize + center crop as in evaluation).
    Policy: an unreadable image stops the export before converting, naming the file."""
    import tensorflow as tf
    from keras_pf.training.data import eval_transform

    files = _image_files(directory)
    picks = np.unique(np.linspace(0, len(files) - 1, min(num_images, len(files))).round().astype(int))
    images = []
    for index in picks:
        path = files[index]
        try:
            data = tf.io.read_file(path)
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            images.append(np.asarray(eval_transform(image, tuple(image_size)), dtype="float32"))
        except (tf.errors.OpError, OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Calibration image {path!r} cannot be read ({reason[:120]}); remove or "
                "replace it, nothing was converted.") from None
    return np.stack(images)


def calibration_images(calibration, image_size, raw_pixels, num_images=100, seed=0):
    """`(images, source_note)`: up to `num_images` float32 images of `image_size`, as the
    exported file consumes them (raw [0, 255] pixels if `raw_pixels`, else preprocessed).

    `calibration`: a numpy array (used as given), a directory of images (class
    subfolders or flat; an unreadable image is an error naming it) or `"tfds:NAME"`
    (read through `keras_pf.training.data.eval_dataset`), or None: uniform random images, with a
    `CalibrationWarning`.
    """
    from keras_pf.models.imagenet import preprocess_input

    if num_images <= 0:
        raise ValueError(f"The number of calibration images must be positive; received {num_images}.")
    if calibration is None:
        warnings.warn(
            "No calibration images given: int8 calibration falls back to uniform random "
            "images, so activation ranges are guesses and int8 accuracy WILL suffer. "
            "Pass real images (calibration=DIR, 'tfds:NAME' or an array; CLI: "
            "--calibration).", CalibrationWarning, stacklevel=3)
        rng = np.random.default_rng(seed)
        pixels = rng.uniform(0, 255, (num_images, *image_size, 3)).astype("float32")
        note = "uniform random pixels (no calibration images given)"
        return (pixels if raw_pixels else preprocess_input(pixels)), note
    if isinstance(calibration, np.ndarray) or (
            not isinstance(calibration, (str, os.PathLike)) and hasattr(calibration, "shape")):
        images = np.asarray(calibration, dtype="float32")
        if images.ndim != 4 or tuple(images.shape[1:3]) != tuple(image_size):
            raise ValueError(
                f"Calibration array must be (N, {image_size[0]}, {image_size[1]}, C) images; "
                f"received shape {images.shape}."
            )
        return images[:num_images], f"{min(len(images), num_images)} given images"
    source = os.fspath(calibration)
    if source.startswith("tfds:"):
        from keras_pf.training import data

        dataset, _ = data.eval_dataset(source, image_size=tuple(image_size), batch_size=16,
                                       preprocessing=None)
        batches, count = [], 0
        for images, _ in dataset:
            batches.append(np.asarray(images, dtype="float32"))
            count += len(batches[-1])
            if count >= num_images:
                break
        if not batches:
            raise ValueError(f"Calibration source {source!r} yielded no images.")
        pixels = np.concatenate(batches)[:num_images]
    elif os.path.isdir(source):
        pixels = _folder_images(source, image_size, num_images)
    else:
        raise ValueError(
            f"Calibration source {source!r} is neither a directory of images nor "
            "'tfds:NAME'. Pass a folder of images (flat or one subfolder per class), "
            "e.g. --calibration ~/val_images."
        )
    images = pixels if raw_pixels else preprocess_input(pixels)
    return images, f"{len(images)} images from {source}"
