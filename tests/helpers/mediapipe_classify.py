"""Run MediaPipe Tasks' ImageClassifier (the C++ task Android apps run) on a `.tflite`
file: `python mediapipe_classify.py MODEL.tflite IMAGES.npy` prints one JSON line per
image, `[[category_name, index, score], ...]` for every class, best first.

Runs in the interpreter of KERAS_PF_MEDIAPIPE_PYTHON (a venv with `mediapipe`, which
cannot share one environment with TensorFlow 2.21), so it imports no keras_pf."""

import json
import sys

import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions
import mediapipe as mp


def main(model_path, images_path):
    images = np.load(images_path)
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=model_path), max_results=-1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                  data=np.ascontiguousarray(image, dtype=np.uint8)))
            print(json.dumps([[c.category_name, c.index, c.score]
                              for c in result.classifications[0].categories]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
