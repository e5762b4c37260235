"""`tf.data` input pipelines for keras_pf models: evaluation and training.

A `source` is either

- an image folder: one subfolder per class, images anywhere below it (jpg, jpeg,
  png, bmp, gif). Class index = position of the subfolder's name in sorted order, as
  `torchvision.datasets.ImageFolder` and `keras.utils.image_dataset_from_directory`
  number them; or
- `"tfds:NAME"` or `"tfds:NAME:SPLIT"`: a tensorflow-datasets dataset with an
  `image` feature and a `label` ClassLabel. The default split is "validation" if the
  dataset has one, else "test" (evaluation) or "train" (training). `data_dir` and
  `manual_dir` are passed to tfds (e.g. `manual_dir` holding ImageNet's tar files for
  `tfds:imagenet2012`).

Unreadable images in an image folder (empty, not an image, truncated: no end marker,
or more pixels than `max_image_pixels()`, a guard against decompression bombs) are
found before training by reading each file's header and last bytes, skipped, and named
in one warning; the run goes on with the others (and fails if none is left). Data
corrupted in a way only decoding reveals is skipped while reading (`ignore_errors`),
its place in the epoch taken by another image of the set.
The pixel limit is `$KERAS_PF_MAX_IMAGE_PIXELS` (default PIL's, 89,478,485: 268 MB
as RGB).

Every dataset yields `(images, labels)` batches: float32 NHWC images preprocessed with
`keras_pf.preprocess_input` (RGB in [0, 255] -> ImageNet mean/std), int32 labels.
This module is TensorFlow-specific on purpose: the models themselves are not.
"""

import math
import os
import warnings

import tensorflow as tf

from keras_pf.models.imagenet import preprocess_input

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
AUTOTUNE = tf.data.AUTOTUNE
MAX_IMAGE_PIXELS_ENV = "KERAS_PF_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS
# How each format ends: a file cut short during a copy or download lacks it.
_END_MARKERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",), "GIF": (b"\x3b",)}


class UnreadableImageWarning(UserWarning):
    """Some images of an image folder cannot be read and are left out."""


def max_image_pixels():
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"${MAX_IMAGE_PIXELS_ENV} must be a positive integer; it is {text!r}")
    return int(text)


def image_problem(path):
    """Why the image file `path` cannot be used (a short phrase), or None if it can.
    Reads the header and the last bytes only: cheap enough for every file of a dataset."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height, kind = image.width, image.height, image.format
    except Image.DecompressionBombError as error:
        return f"too many pixels ({error})"
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({type(error).__name__}: {error})"
    if width * height > max_image_pixels():
        return (f"{width}x{height} pixels, more than the limit of {max_image_pixels()} "
                f"(${MAX_IMAGE_PIXELS_ENV}; a decompression bomb?)")
    markers = _END_MARKERS.get(kind)
    if markers:
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - 64, 0))
            tail = f.read().rstrip(b"\0\r\n ")
        if not tail.endswith(markers):
            return f"truncated {kind} (no end marker)"
    return None


def read_image(path):
    """The image file `path` as a uint8 RGB array; ValueError naming the file if it is
    unreadable, truncated or over the pixel limit (checked before decoding)."""
    import numpy as np
    from PIL import Image

    if not os.path.isfile(path):
        raise ValueError(f"image not found: {path}")
    problem = image_problem(path)
    if problem:
        raise ValueError(f"cannot use image {path}: {problem}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def readable_images(paths, labels):
    """`(paths, labels)` without the unreadable images, named in one warning."""
    problems = [(path, image_problem(path)) for path in paths]
    bad = [(path, problem) for path, problem in problems if problem]
    if bad:
        listed = "; ".join(f"{path}: {problem}" for path, problem in bad[:10])
        warnings.warn(
            f"skipping {len(bad)} of {len(paths)} images that cannot be used: {listed}"
            + (f"; and {len(bad) - 10} more" if len(bad) > 10 else ""),
            UnreadableImageWarning, stacklevel=3,
        )
    keep = [i for i, (_, problem) in enumerate(problems) if not problem]
    return [paths[i] for i in keep], [labels[i] for i in keep]


def _size_pair(image_size):
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def _check_interpolation(interpolation):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"Unknown interpolation {interpolation!r}; use one of {', '.join(INTERPOLATIONS)}."
        )


def image_files(directory):
    """Every image file under `directory` (flat or in subfolders), sorted, one pass."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def image_folder_files(directory):
    """`(paths, labels, class_names)` of an image folder (sorted class subfolders)."""
    if not os.path.isdir(directory):
        raise ValueError(
            f"{directory!r} is not a directory. Pass an image folder (one subfolder per "
            "class) or 'tfds:NAME[:SPLIT]'."
        )
    class_names = sorted(
        entry for entry in os.listdir(directory) if os.path.isdir(os.path.join(directory, entry))
    )
    if not class_names:
        raise ValueError(
            f"{directory!r} has no subfolders. An image folder needs one subfolder per "
            "class, holding that class's images."
        )
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        found = image_files(os.path.join(directory, class_name))
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {directory!r}'s class "
            "subfolders."
        )
    paths, labels = readable_images(paths, labels)
    if not paths:
        raise ValueError(f"None of the images under {directory!r} can be read (see the warning above).")
    return paths, labels, class_names


def _decode_file(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return image, label


def _parse_tfds_source(source):
    parts = source.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError(f"Bad dataset {source!r}: write 'tfds:NAME' or 'tfds:NAME:SPLIT'.")
    return parts[1], (parts[2] if len(parts) == 3 else None)


def _tfds_images(source, default_splits, data_dir, manual_dir, shuffle_files):
    """`(dataset of (uint8 HWC3 image, label), class_names)` from tfds."""
    import tensorflow_datasets as tfds

    name, split = _parse_tfds_source(source)
    builder = tfds.builder(name, data_dir=data_dir)
    # Prepares from local files only when they are there (e.g. manual_dir); otherwise
    # tfds downloads, as `tfds.load` does.
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    info = builder.info
    if split is None and not info.splits:
        split = default_splits[0]  # split metadata unknown (e.g. under tfds mocking)
    if split is None:
        split = next((s for s in default_splits if s in info.splits), None)
        if split is None:
            raise ValueError(
                f"{name} has no {' or '.join(default_splits)} split; name one: "
                f"'tfds:{name}:SPLIT' with SPLIT in {sorted(info.splits)}."
            )
    if "image" not in info.features or "label" not in info.features:
        raise ValueError(f"tfds dataset {name} needs 'image' and 'label' features.")
    class_names = list(info.features["label"].names)
    dataset = builder.as_dataset(split=split, shuffle_files=shuffle_files)

    def to_rgb(example):
        image = example["image"]
        # Grayscale datasets (e.g. mnist) have one channel; the models want RGB.
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return tf.cast(image, tf.uint8), example["label"]

    return dataset.map(to_rgb, num_parallel_calls=AUTOTUNE), class_names


def source_images(source, training, data_dir=None, manual_dir=None, shuffle_seed=None):
    """`(dataset of (uint8 HWC image, int32 label), class_names)`, unbatched.

    Training datasets are shuffled (file order, before decoding, so that the shuffle
    buffer holds file names, not images).
    """
    source = os.fspath(source)
    if source.startswith("tfds:"):
        splits = ("train",) if training else ("validation", "test")
        dataset, class_names = _tfds_images(
            source, splits, data_dir, manual_dir, shuffle_files=training
        )
        if training:
            dataset = dataset.shuffle(4096, seed=shuffle_seed)
    else:
        paths, labels, class_names = image_folder_files(source)
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        if training:
            dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
        # What only decoding shows (corrupt data inside a well-formed file) is skipped.
        # ignore_errors() makes the length unknown, and Keras then miscounts an epoch
        # (an extra optimizer step and an "ran out of data" warning): a skipped image's
        # place is taken by the first readable one, so every epoch has len(paths) images.
        dataset = dataset.map(_decode_file, num_parallel_calls=AUTOTUNE).ignore_errors()
        dataset = dataset.concatenate(dataset.take(1).repeat()).take(len(paths))
    dataset = dataset.map(lambda image, label: (image, tf.cast(label, tf.int32)))
    return dataset, class_names


def eval_transform(image, image_size=224, crop_ratio=0.875, interpolation="bilinear"):
    """Resize the shorter side to `image_size / crop_ratio`, center-crop `image_size`
    (the timm/torchvision evaluation transform). Returns float32 RGB in [0, 255]."""
    crop_height, crop_width = _size_pair(image_size)
    scale_size = math.floor(max(crop_height, crop_width) / crop_ratio)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = scale_size / tf.minimum(height, width)
    # torchvision truncates the longer side and keeps the shorter exactly.
    new_height = tf.where(height <= width, scale_size, tf.cast(height * scale, tf.int32))
    new_width = tf.where(width < height, scale_size, tf.cast(width * scale, tf.int32))
    new_height = tf.maximum(new_height, crop_height)
    new_width = tf.maximum(new_width, crop_width)
    image = tf.image.resize(
        tf.cast(image, tf.float32), tf.stack([new_height, new_width]), method=interpolation, antialias=True
    )
    top = tf.cast(tf.round(tf.cast(new_height - crop_height, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_width - crop_width, tf.float32) / 2.0), tf.int32)
    image = image[top : top + crop_height, left : left + crop_width]
    image = tf.clip_by_value(image, 0.0, 255.0)  # bicubic overshoots
    return tf.ensure_shape(image, (crop_height, crop_width, 3))


def train_transform(image, image_size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bilinear"):
    """Random-resized-crop (Inception-style: area fraction in `scale`, aspect ratio in
    `ratio`) to `image_size`, then a random horizontal flip. Returns float32 [0, 255]."""
    height, width = _size_pair(image_size)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, size)
    image = tf.image.resize(tf.cast(image, tf.float32), (height, width), method=interpolation, antialias=True)
    image = tf.image.random_flip_left_right(image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, (height, width, 3))


def _finish(dataset, batch_size, preprocessing, drop_remainder=False):
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if preprocessing is not None:
        dataset = dataset.map(lambda x, y: (preprocessing(x), y), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def eval_dataset(
    source,
    image_size=224,
    crop_ratio=0.875,
    interpolation="bilinear",
    batch_size=32,
    *,
    data_dir=None,
    manual_dir=None,
    preprocessing=preprocess_input,
):
    """The evaluation pipeline: `(dataset, class_names)`.

    `dataset` yields `(images, labels)`: float32 `(batch, image_size, image_size, 3)`
    images (shorter side resized to `image_size / crop_ratio` with `interpolation`,
    center crop `image_size`, then `preprocessing`, by default
    `keras_pf.preprocess_input`) and int32 labels, in the source's order. `image_size`
    may be an int or `(height, width)`. See the module docstring for `source`.
    `preprocessing=None` yields the raw float32 [0, 255] pixels.
    """
    _check_interpolation(interpolation)
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must be in (0, 1]; received {crop_ratio}.")
    dataset, class_names = source_images(source, training=False, data_dir=data_dir, manual_dir=manual_dir)
    dataset = dataset.map(
        lambda image, label: (eval_transform(image, image_size, crop_ratio, interpolation), label),
        num_parallel_calls=AUTOTUNE,
    )
    return _finish(dataset, batch_size, preprocessing), class_names


def train_dataset(
    source,
    image_size=224,
    batch_size=32,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    interpolation="bilinear",
    *,
    data_dir=None,
    manual_dir=None,
    preprocessing=preprocess_input,
    seed=None,
    repeat=False,
    drop_remainder=False,
):
    """The training pipeline: `(dataset, class_names)`, reshuffled every epoch.

    Random-resized-crop to `image_size` (area fraction in `scale`, aspect ratio in
    `ratio`), random horizontal flip, then `preprocessing` (by default
    `keras_pf.preprocess_input`); int32 labels. `repeat=True` repeats forever (use it
    with `steps_per_epoch`).
    """
    _check_interpolation(interpolation)
    dataset, class_names = source_images(
        source, training=True, data_dir=data_dir, manual_dir=manual_dir, shuffle_seed=seed
    )
    dataset = dataset.map(
        lambda image, label: (train_transform(image, image_size, scale, ratio, interpolation), label),
        num_parallel_calls=AUTOTUNE,
    )
    if repeat:
        dataset = dataset.repeat()
    return _finish(dataset, batch_size, preprocessing, drop_remainder), class_names
