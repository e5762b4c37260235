"""Run MediaPipe Tasks' ImageSegmenter (the C++ task Android apps run) on a `.tflite`
file: `python mediapipe_segment.py MODEL.tflite IMAGES.npy OUT.npy` writes the category
masks (uint8, one per image) to OUT.npy and prints the labels the task read.

Runs in the interpreter of KERAS_PF_MEDIAPIPE_PYTHON (a venv with `mediapipe`), so it
imports no keras_pf."""

import json
import sys

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions


def main(model_path, images_path, out_path):
    images = np.load(images_path)
    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=model_path),
                                           output_category_mask=True, output_confidence_masks=False)
    masks = []
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        labels = list(segmenter.labels)
        for image in images:
            result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                data=np.ascontiguousarray(image, dtype=np.uint8)))
            mask = np.array(result.category_mask.numpy_view())
            masks.append(mask.reshape(mask.shape[:2]))  # (H, W) or (H, W, 1)
    np.save(out_path, np.stack(masks))
    print(json.dumps(labels))


if __name__ == "__main__":
    main(*sys.argv[1:4])
