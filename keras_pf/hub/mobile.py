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
    image = meta_fb.TensorMetadataT()
    image.name = "image"
    image.description = "RGB image, pixel values in [0, 255]."
    image.content = meta_fb.ContentT()
    image.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    image.content.contentProperties = meta_fb.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta_fb.ColorSpaceType.RGB
    if input_dtype != "uint8":
        unit = meta_fb.ProcessUnitT()
        unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
        unit.options = meta_fb.NormalizationOptionsT()
        unit.options.mean, unit.options.std = [0.0], [1.0]
        image.processUnits = [unit]
    image.stats = meta_fb.StatsT()
    image.stats.min, image.stats.max = [0.0], [255.0]

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
        labels_file = meta_fb.AssociatedFileT()
        labels_file.name = tflite_metadata.LABELS_FILE
        labels_file.description = "Class names, one per line, in output channel order."
        labels_file.type = meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
        masks.associatedFiles = [labels_file]

    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [masks]
    model = meta_fb.ModelMetadataT()
    model.name, model.description, model.version = name, description, version
    model.author, model.license = author, license
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = tflite_metadata.MIN_PARSER_VERSION
    builder = __import__("flatbuffers").Builder(0)
    builder.Finish(model.Pack(builder), tflite_metadata.METADATA_IDENTIFIER)
    return bytes(builder.Output())


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
    from keras_pf.mobile.export import DEFAULT_LICENSE, export_tflite
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
    export_tflite(segmenter, path, precision=precision, calibration=calibration,
                  include_preprocessing=True, num_calibration=num_calibration, input_dtype=input_dtype,
                  metadata=False, float_fallback=float_fallback, labels=None)
    info = {"name": segmenter.name,
            "description": (f"Image segmenter ({classes} classes) exported by keras_pf "
                            f"{keras_pf.__version__}. Input: one RGB image, pixels in [0, 255] "
                            "(ImageNet normalization inside the graph)."),
            "version": keras_pf.__version__, "author": "keras_pf", "license": DEFAULT_LICENSE}
    info.update(model_info or {})
    if metadata:
        with open(path, "rb") as f:
            content = f.read()
        packed = build_segmenter_metadata(labels=labels, input_dtype=input_dtype, **info)
        write_atomic(path, tflite_metadata.attach_metadata(content, packed, labels))
    write_atomic(labels_path(path), "\n".join(labels) + "\n")
    return path
