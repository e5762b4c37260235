"""A keras-hub segmenter on a PF backbone to a phone: a builtins-only `.tflite` file
with the metadata MediaPipe Tasks' `ImageSegmenter` reads.

`export_segmenter(segmenter, "seg.tflite", labels=[...])` goes through keras_pf's own
export (`keras_pf.mobile.export.export_tflite`: batch 1, static shapes, builtin ops
only, every precision, int8 with the XNNPACK float fallback, the file read back and
checked), with the ImageNet normalization inside the graph (MediaPipe cannot normalize
per channel), so the file takes RGB pixels in [0, 255]. Its metadata is a segmenter's:
the image input (mean 0, std 1), and one output, `(1, H, W, classes)` per-pixel
scores, with the class names as its `TENSOR_AXIS_LABELS` file (MediaPipe's category
names). MediaPipe's category mask is the per-pixel argmax, whatever the scores' scale.
"""

import os

import keras_pf
from keras_pf.files import write_atomic
from keras_pf.mobile import metadata as tflite_metadata
from keras_pf.mobile.metadata import meta_fb


def build_segmenter_metadata(*, name, description, version, author, license, labels=None,
                             input_dtype="float32"):
    """The metadata flatbuffer (bytes) of a one-image-in, one-score-map-out segmenter
    whose graph takes RGB pixels in [0, 255]."""
    masks = meta_fb.TensorMetadataT()
    masks.name = "segmentation_masks"
    masks.description = ("Per-pixel score of each class (logits), (1, height, width, classes); "
                         "the category of a pixel is the argmax.")
    masks.content = meta_fb.ContentT()
    masks.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    masks.content.contentProperties = meta_fb.ImagePropertiesT()
    masks.content.contentProperties.colorSpace = meta_fb.ColorSpaceType.GRAYSCALE
    masks.content.range = meta_fb.ValueRangeT()
    masks.content.range.min, masks.content.range.max = 1, 2  # the height and width axes
    if labels is not None:
        masks.associatedFiles = [tflite_metadata.labels_file_metadata(
            "Class names, one per line, in output channel order.")]
    return tflite_metadata.pack_metadata(
        tflite_metadata.image_metadata(input_dtype), masks, name=name, description=description,
        version=version, author=author, license=license)


def check_normalization(segmenter):
    """Raise ValueError when `segmenter` carries a keras-hub preprocessor whose image
    converter normalizes otherwise than ImageNet's mean/std (`keras_pf.preprocess_input`,
    what the file does inside its graph): its file would be fed the wrong input."""
    import numpy as np

    from keras_pf.hub.image_converter import IMAGENET_OFFSET, IMAGENET_SCALE

    converter = getattr(getattr(segmenter, "preprocessor", None), "image_converter", None)
    if converter is None:
        return
    for name, expected in (("scale", IMAGENET_SCALE), ("offset", IMAGENET_OFFSET)):
        value = getattr(converter, name, None)
        if value is None:
            continue
        value = np.broadcast_to(np.asarray(value, "float64").reshape(-1), (3,))
        if not np.allclose(value, expected, rtol=1e-4, atol=1e-6):
            raise ValueError(
                f"{segmenter.name}'s preprocessor normalizes with {name}={value.tolist()}, not "
                f"ImageNet's mean/std ({name}={[round(v, 5) for v in expected]}), which the exported "
                "file applies inside its graph; train on keras_pf.preprocess_input-normalized "
                "images (or keras_pf.hub's image converters) to export for MediaPipe")


def export_segmenter(segmenter, path, precision="float32", calibration=None, labels=None,
                     num_calibration=100, input_dtype="float32", model_info=None, float_fallback=True,
                     metadata=True):
    """Write `segmenter` (e.g. keras-hub's `DeepLabV3ImageSegmenter`, or any model from
    one fixed-size image to `(H, W, classes)` scores, trained on
    `keras_pf.preprocess_input`-normalized images) as a MediaPipe-ready `.tflite` file;
    returns `path`. `labels`: one class name per output channel (default "class_0", ...).
    `metadata=False` writes no TFLite metadata (the labels then only beside the file).
    Other arguments as `keras_pf.mobile.export.export_tflite`."""
    from keras_pf.mobile.converter import temp_dir
    from keras_pf.mobile.export import DEFAULT_LICENSE, check_export_arguments, export_tflite
    from keras_pf.mobile.labels import labels_path

    if not isinstance(segmenter.output_shape, tuple) or len(segmenter.output_shape) != 4:
        raise ValueError(f"a segmenter outputs (batch, height, width, classes); {segmenter.name} "
                         f"outputs {segmenter.output_shape}")
    classes = segmenter.output_shape[-1]
    check_normalization(segmenter)
    labels = [f"class_{i}" for i in range(classes)] if labels is None else [str(v) for v in labels]
    if len(labels) != classes or any(not v or "\n" in v for v in labels):
        raise ValueError(f"labels: {classes} non-empty one-line names needed (one per output channel); "
                         f"got {len(labels)}")
    path = os.fspath(path)
    options = dict(precision=precision, calibration=calibration, include_preprocessing=True,
                   num_calibration=num_calibration, input_dtype=input_dtype, metadata=False,
                   float_fallback=float_fallback, labels=None)
    if not metadata:
        export_tflite(segmenter, path, **options)
        write_atomic(labels_path(path), "\n".join(labels) + "\n")
        return path
    # the checks export_tflite makes of `path`, before the conversion
    check_export_arguments(path, precision, num_calibration, tuple(segmenter.input_shape[1:3]))
    # converted in the private temporary folder: a file without its metadata never
    # stands at `path`, also when the process is killed between the two steps
    with temp_dir() as tmp:
        bare = export_tflite(segmenter, os.path.join(tmp, "segmenter.tflite"), **options)
        with open(bare, "rb") as f:
            content = f.read()
    info = {"name": segmenter.name,
            "description": (f"Image segmenter ({classes} classes) exported by keras_pf "
                            f"{keras_pf.__version__}. Input: one RGB image, pixels in [0, 255] "
                            "(ImageNet normalization inside the graph)."),
            "version": keras_pf.__version__, "author": "keras_pf", "license": DEFAULT_LICENSE}
    info.update(model_info or {})
    packed = build_segmenter_metadata(labels=labels, input_dtype=input_dtype, **info)
    write_atomic(path, tflite_metadata.attach_metadata(content, packed, labels))
    write_atomic(labels_path(path), "\n".join(labels) + "\n")
    return path


# --------------------------------------------------------------------------- detectors
#
# A keras-hub `RetinaNetObjectDetector` to a phone. The file holds the network up to its
# heads' raw outputs, one `(1, anchors, 4 + classes)` tensor: per anchor, the four box
# deltas (keras-hub's "center_xywh" encoding against the anchor) then the class logits.
# Box decoding and non-maximum suppression are not in the file (see `export_detector`):
# the app runs `decode_detections` below (numpy only, to port as it is), with the anchors
# of `detector_anchors` shipped beside the file (`<file>.anchors.npy`).

_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw")


def _to_yxyx(boxes, fmt, height, width):
    """`boxes` (..., 4) in keras' bounding-box format `fmt` -> absolute yxyx."""
    import numpy as np

    rel = fmt.startswith("rel_")
    base = fmt[4:] if rel else fmt
    if base not in _FORMATS:
        raise ValueError(f"bounding_box_format {fmt!r} is not one of {_FORMATS} (or rel_ of them)")
    b = np.asarray(boxes, "float64")
    if rel:
        scale = np.array([width, height, width, height]) if base in ("xyxy", "xywh", "center_xywh") \
            else np.array([height, width, height, width])
        b = b * scale
    a, c, d, e = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    if base == "xyxy":
        out = (c, a, e, d)
    elif base == "yxyx":
        out = (a, c, d, e)
    elif base == "xywh":
        out = (c, a, c + e, a + d)
    elif base == "center_xywh":
        out = (c - e / 2, a - d / 2, c + e / 2, a + d / 2)
    else:  # center_yxhw
        out = (a - d / 2, c - e / 2, a + d / 2, c + e / 2)
    return np.stack(out, -1)


def _from_yxyx(boxes, fmt, height, width):
    """absolute yxyx -> keras' bounding-box format `fmt`."""
    import numpy as np

    rel = fmt.startswith("rel_")
    base = fmt[4:] if rel else fmt
    if base not in _FORMATS:
        raise ValueError(f"bounding_box_format {fmt!r} is not one of {_FORMATS} (or rel_ of them)")
    y1, x1, y2, x2 = (boxes[..., i] for i in range(4))
    out = {"xyxy": (x1, y1, x2, y2), "yxyx": (y1, x1, y2, x2), "xywh": (x1, y1, x2 - x1, y2 - y1),
           "center_xywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1),
           "center_yxhw": ((y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1)}[base]
    b = np.stack(out, -1)
    if rel:
        scale = np.array([width, height, width, height]) if base in ("xyxy", "xywh", "center_xywh") \
            else np.array([height, width, height, width])
        b = b / scale
    return b


def detector_anchors(detector):
    """The anchors of `detector` (keras-hub `RetinaNetObjectDetector`) for its fixed input
    size, in the order of its heads' outputs: `(anchors, 4)` float32, absolute yxyx pixels
    (from the detector's own `anchor_generator`)."""
    import numpy as np

    height, width = detector.input_shape[1:3]
    if height is None or width is None:
        raise ValueError(f"{detector.name} has no fixed input size ({detector.input_shape}); build "
                         "its backbone with image_shape=(H, W, 3) to export it")
    levels = detector.anchor_generator(np.zeros((1, height, width, 3), "float32"))
    anchors = np.concatenate([np.asarray(levels[k]) for k in levels], 0)
    return _to_yxyx(anchors, detector.anchor_generator.bounding_box_format, height, width).astype("float32")


def _iou(box, boxes):
    import numpy as np

    y1 = np.maximum(box[0], boxes[:, 0])
    x1 = np.maximum(box[1], boxes[:, 1])
    y2 = np.minimum(box[2], boxes[:, 2])
    x2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-8)  # keras-hub's _bbox_overlap


def decode_detections(head, anchors, image_size, bounding_box_format="yxyx", from_logits=True,
                      iou_threshold=0.5, confidence_threshold=0.5, max_detections=100):
    """What keras-hub's `RetinaNetObjectDetector.predict` does after the network, in numpy:
    the app's post-processing of an exported detector (`export_detector`).

    Args:
        head: the file's output for one image, `(anchors, 4 + classes)` (a leading batch
            axis of 1 is dropped): box deltas, then class logits.
        anchors: `(anchors, 4)` absolute yxyx, as `detector_anchors` (the `.anchors.npy`
            beside the file).
        image_size: `(height, width)` of the file's input.
        bounding_box_format: the detector's; the format of the returned boxes.
        from_logits, iou_threshold, confidence_threshold, max_detections: the detector's
            `prediction_decoder` (keras-hub's `NonMaxSuppression`: sigmoid, class-agnostic
            greedy NMS on the best class's score, scores not above the threshold dropped,
            boxes with no positive coordinate dropped, as keras-hub does).

    Returns `{"boxes": (max_detections, 4), "confidence": (max_detections,), "labels":
    (max_detections,), "num_detections": int}`, best first, padded with -1 as keras-hub pads.

    Decoding (keras' `decode_deltas_to_boxes`, "center_xywh" encoding, no variance): with the
    anchor's centre (ax, ay) and size (aw, ah), x = ax + dx*aw, y = ay + dy*ah, w = aw*exp(dw),
    h = ah*exp(dh)."""
    import numpy as np

    head = np.asarray(head, "float64")
    if head.ndim == 3 and head.shape[0] == 1:
        head = head[0]
    anchors = np.asarray(anchors, "float64")
    if head.ndim != 2 or head.shape[1] < 5 or anchors.shape != (head.shape[0], 4):
        raise ValueError(f"head {head.shape} and anchors {anchors.shape} do not fit: expected "
                         "(anchors, 4 + classes) and (anchors, 4)")
    height, width = image_size
    deltas, logits = head[:, :4], head[:, 4:]
    ay1, ax1, ay2, ax2 = anchors.T
    aw, ah = ax2 - ax1, ay2 - ay1
    cx, cy = (ax1 + ax2) / 2 + deltas[:, 0] * aw, (ay1 + ay2) / 2 + deltas[:, 1] * ah
    w, h = np.exp(deltas[:, 2]) * aw, np.exp(deltas[:, 3]) * ah
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)
    scores = 1 / (1 + np.exp(-logits)) if from_logits else logits
    confidence, labels = scores.max(-1), scores.argmax(-1)
    # keras-hub's NMS (a port of tf.image.non_max_suppression_padded): greedy on the
    # best class's score, scores above the threshold only; a box is suppressed by a
    # kept one when their IoU is >= iou_threshold; a box none of whose yxyx coordinates
    # is positive (wholly above/left of the image) counts as padding and is never kept.
    keep = []
    order = np.argsort(-confidence, kind="stable")
    candidates = order[(confidence[order] > confidence_threshold) & (boxes[order] > 0).any(-1)]
    while len(candidates) and len(keep) < max_detections:
        best, candidates = candidates[0], candidates[1:]
        keep.append(best)
        candidates = candidates[_iou(boxes[best], boxes[candidates]) < iou_threshold]
    n = len(keep)
    out_boxes = -np.ones((max_detections, 4), "float32")
    out_conf = -np.ones((max_detections,), "float32")
    out_labels = -np.ones((max_detections,), "int64")
    if n:
        keep = np.asarray(keep)
        out_boxes[:n] = _from_yxyx(boxes[keep], bounding_box_format, height, width)
        out_conf[:n], out_labels[:n] = confidence[keep], labels[keep]
    return {"boxes": out_boxes, "confidence": out_conf, "labels": out_labels, "num_detections": n}


def _head_outputs(detector):
    outputs = detector.output
    if not isinstance(outputs, dict) or set(outputs) != {"bbox_regression", "cls_logits"}:
        raise ValueError(f"{detector.name} is not a RetinaNet-style detector (outputs "
                         "'bbox_regression' and 'cls_logits')")
    return outputs["bbox_regression"], outputs["cls_logits"]


def detector_head_model(detector):
    """A Keras model from the detector's image input to one `(batch, anchors, 4 + classes)`
    tensor: its box deltas and class logits side by side (one output, in a fixed order)."""
    import keras

    head = keras.layers.Concatenate(axis=-1, name="detections")(list(_head_outputs(detector)))
    return keras.Model(detector.input, head, name=detector.name + "_heads")


def _format_matrix(fmt, height, width):
    """(4, 4) M with `boxes_xyxy @ M` = the boxes in keras' format `fmt` (all are linear)."""
    import numpy as np

    eye = np.eye(4)
    return np.stack([_from_yxyx(_to_yxyx(row, "xyxy", height, width), fmt, height, width) for row in eye])


def _postprocess_layer():
    """keras.layers.Layer: keras-hub's box decoding and NMS as TFLite builtin ops."""
    import keras
    import numpy as np
    import tensorflow as tf

    class DetectionPostprocess(keras.layers.Layer):
        """(box deltas, class logits) of one image -> keras-hub's `predict` output:
        decoding against constant anchors (MUL/ADD/EXP, XNNPACK), sigmoid, best class,
        one builtin NON_MAX_SUPPRESSION_V5 (class-agnostic, as keras-hub), and the kept
        rows picked by a one-hot matrix product (no GATHER). TensorFlow ops: export only."""

        def __init__(self, anchors, image_size, bounding_box_format, from_logits, iou_threshold,
                     confidence_threshold, max_detections, **kwargs):
            super().__init__(**kwargs)
            a = np.asarray(anchors, "float32")  # yxyx
            self.anchor_wh = np.stack([a[:, 3] - a[:, 1], a[:, 2] - a[:, 0]], -1)
            self.anchor_cxy = np.stack([(a[:, 1] + a[:, 3]) / 2, (a[:, 0] + a[:, 2]) / 2], -1)
            self.to_format = _format_matrix(bounding_box_format, *image_size).astype("float32")
            self.from_logits, self.iou, self.threshold = from_logits, iou_threshold, confidence_threshold
            self.max_detections = max_detections

        def call(self, deltas, logits):
            anchors = self.anchor_wh.shape[0]
            d_xy, d_wh = tf.split(tf.reshape(deltas, (anchors, 4)), 2, axis=-1)
            centre = d_xy * self.anchor_wh + self.anchor_cxy
            half = tf.exp(d_wh) * self.anchor_wh * 0.5
            boxes = tf.concat([centre - half, centre + half], -1)  # xyxy, (anchors, 4)
            logits = tf.reshape(logits, (anchors, -1))
            scores = tf.sigmoid(logits) if self.from_logits else logits
            confidence = tf.reduce_max(scores, -1)
            labels = tf.cast(tf.argmax(scores, -1), "float32")
            # keras-hub's NMS never keeps a box without a positive coordinate
            confidence_nms = confidence * tf.cast(tf.reduce_max(boxes, -1) > 0, "float32")
            index, _, count = tf.raw_ops.NonMaxSuppressionV5(
                boxes=boxes, scores=confidence_nms, max_output_size=self.max_detections,
                iou_threshold=self.iou, score_threshold=self.threshold, soft_nms_sigma=0.0,
                pad_to_max_output_size=True)
            pick = tf.one_hot(index, anchors)
            valid = tf.range(self.max_detections) < count  # (max_detections,)
            def fill(x):
                return -tf.ones_like(x)

            picked_boxes = tf.matmul(tf.matmul(pick, boxes), self.to_format)
            picked_boxes = tf.where(tf.reshape(valid, (-1, 1)), picked_boxes, fill(picked_boxes))
            conf = tf.linalg.matvec(pick, confidence)
            conf = tf.where(valid, conf, fill(conf))
            lab = tf.linalg.matvec(pick, labels)
            lab = tf.cast(tf.where(valid, lab, fill(lab)), "int32")
            return {"boxes": tf.reshape(picked_boxes, (1, -1, 4)), "confidence": tf.reshape(conf, (1, -1)),
                    "labels": tf.reshape(lab, (1, -1)), "num_detections": tf.reshape(count, (1,))}

    return DetectionPostprocess


def detector_postprocess_model(detector):
    """A Keras model (TensorFlow backend) from the detector's image input to keras-hub's
    `predict` output for one image: `boxes` (1, max_detections, 4) in the detector's
    `bounding_box_format`, `confidence`, `labels` (1, max_detections), `num_detections` (1,),
    padded with -1. Box decoding and NMS run as TFLite builtin ops (see
    `export_detector(..., postprocess=True)`)."""
    import keras

    decoder = detector.prediction_decoder
    layer = _postprocess_layer()(
        detector_anchors(detector), tuple(detector.input_shape[1:3]), detector.bounding_box_format,
        decoder.from_logits, decoder.iou_threshold, decoder.confidence_threshold,
        decoder.max_detections, name="postprocess")
    deltas, logits = _head_outputs(detector)
    return keras.Model(detector.input, layer(deltas, logits), name=detector.name + "_detections")


def anchors_path(path):
    """`<path without .tflite>.anchors.npy`: the anchors written beside a detector file."""
    path = os.fspath(path)
    return (path[:-len(".tflite")] if path.endswith(".tflite") else path) + ".anchors.npy"


def export_detector(detector, path, precision="float32", calibration=None, labels=None,
                    num_calibration=100, input_dtype="float32", float_fallback=True, postprocess=True):
    """Write keras-hub's `RetinaNetObjectDetector` (on any backbone, fixed input size,
    trained on `keras_pf.preprocess_input`-normalized images) as a builtins-only `.tflite`
    file; returns `path`. The file takes RGB pixels in [0, 255] (ImageNet normalization
    inside the graph).

    `postprocess=False`: the network up to its heads' raw outputs, one
    `(1, anchors, 4 + classes)` tensor, box deltas then class logits per anchor in the
    order of `detector_anchors`; every op runs in XNNPACK except what keras-hub's FPN
    upsampling needs. The app decodes with `decode_detections` (numpy).
    `postprocess=True` (default): keras-hub's decoding and NMS inside the file
    (`detector_postprocess_model`): outputs `boxes`, `confidence`, `labels`,
    `num_detections` as `predict` gives them; the NMS is TFLite's builtin
    NON_MAX_SUPPRESSION_V5, run by TFLite's own kernel (XNNPACK has none), with the
    ONE_HOT that picks the kept rows.

    Beside the file: `<file>.anchors.npy` (the anchors, absolute yxyx) and
    `<file>.labels.txt` (`labels`, default "class_0", ...). No TFLite metadata.
    Other arguments as `keras_pf.mobile.export.export_tflite`."""
    import io

    import numpy as np

    from keras_pf.mobile.export import export_tflite
    from keras_pf.mobile.labels import labels_path

    deltas, logits = _head_outputs(detector)
    classes = int(logits.shape[-1])
    labels = [f"class_{i}" for i in range(classes)] if labels is None else [str(v) for v in labels]
    if len(labels) != classes or any(not v or "\n" in v for v in labels):
        raise ValueError(f"labels: {classes} non-empty one-line names needed (one per class); "
                         f"got {len(labels)}")
    anchors = detector_anchors(detector)
    if anchors.shape[0] != deltas.shape[1]:
        raise ValueError(f"{detector.name}: {anchors.shape[0]} anchors for {deltas.shape[1]} "
                         "head outputs")
    check_normalization(detector)
    model = detector_postprocess_model(detector) if postprocess else detector_head_model(detector)
    path = os.fspath(path)
    export_tflite(model, path, precision=precision, calibration=calibration, include_preprocessing=True,
                  num_calibration=num_calibration, input_dtype=input_dtype, metadata=False,
                  float_fallback=float_fallback, labels=None)
    buffer = io.BytesIO()
    np.save(buffer, anchors)
    write_atomic(anchors_path(path), buffer.getvalue())
    write_atomic(labels_path(path), "\n".join(labels) + "\n")
    return path


def run_detector_file(path, pixels):
    """The outputs of an `export_detector(..., postprocess=True)` file on `pixels`
    (one RGB image, or a batch run one at a time): a dict of numpy arrays keyed as
    keras-hub's `predict` output."""
    import numpy as np

    from keras_pf.mobile.check import interpreter

    runner = interpreter(path).get_signature_runner()
    pixels = np.asarray(pixels, "float32")
    results = [runner(**{runner.get_input_details().popitem()[0]: image[None]})
               for image in (pixels if pixels.ndim == 4 else pixels[None])]
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def check_detector(detector, path, pixels, postprocess=True):
    """How faithful a detector file is to `detector` on `pixels` (RGB in [0, 255]): a
    `keras_pf.mobile.check.check_tflite`-style report (`format_check` prints it). Raw
    heads: the heads' outputs compared. With decoding and NMS: keras-hub's `predict`
    against the file; `detection_agreement` is the fraction of images with the same
    number of detections and labels, the diffs are over their boxes (pixels)."""
    import numpy as np

    from keras_pf.mobile import check
    from keras_pf.models.imagenet import preprocess_input

    pixels = np.asarray(pixels, "float32")
    if not postprocess:
        return check.check_tflite(detector_head_model(detector), path, pixels, include_preprocessing=True)
    expected = {k: np.asarray(v) for k, v in
                detector.predict(preprocess_input(pixels), verbose=0).items()}
    got = run_detector_file(path, pixels)
    same = (got["num_detections"] == expected["num_detections"]) & \
        (got["labels"] == expected["labels"]).all(-1)
    diff = np.abs(got["boxes"][same] - expected["boxes"][same]) if same.any() else np.full(1, np.inf)
    return {"path": os.fspath(path), "size_bytes": os.path.getsize(path), "images": len(pixels),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "detection_agreement": float(same.mean()), "dynamic_ops": check.dynamic_ops(path),
            "undelegated_ops": check.undelegated_ops(path), "weight_dtypes": check.weight_dtypes(path)}
