"""TFLite model metadata for exported image classifiers.

What MediaPipe Tasks' `ImageClassifier`, the TFLite Task Library and Android Studio's ML
model binding read from a `.tflite` file: model name, description, version, author,
license; the image input (RGB, its `NormalizationOptions`, value range); the output's
meaning and its class names as a `TENSOR_AXIS_LABELS` file packed into the model (a zip
archive appended to the flatbuffer, as the TFLite metadata populator does).

The metadata flatbuffer is built with the code flatc generates from the TFLite metadata
schema (`metadata_schema_py_generated`, shipped by mediapipe, copied here because neither
mediapipe nor tflite-support installs beside TensorFlow 2.21) and attached with the TFLite
model schema's generated code that TensorFlow ships. No hand-made layout.
"""

import io
import zipfile

from keras_pf.mobile import metadata_schema_py_generated as meta_fb

METADATA_NAME = "TFLITE_METADATA"  # the model.metadata entry readers look for
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
# Every field written here exists since metadata schema 1.0.0.
MIN_PARSER_VERSION = "1.0.0"


def _tflite_schema():
    from keras_pf._compat.tensorflow import tflite_schema

    return tflite_schema()


def image_metadata(input_dtype="float32", normalization=(0.0, 1.0)):
    """The input image's tensor metadata (RGB, pixels in [0, 255]); `normalization`:
    `(mean, std)`, scalars or per-channel triples, that turn the input tensor's expected
    values into what the graph wants: `(0, 1)` when the graph takes RGB pixels in
    [0, 255] (normalization inside). Ignored for uint8 input, which MediaPipe feeds
    unchanged."""
    image = meta_fb.TensorMetadataT()
    image.name = "image"
    image.content = meta_fb.ContentT()
    image.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    image.content.contentProperties = meta_fb.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta_fb.ColorSpaceType.RGB
    mean, std = ([float(v)] if isinstance(v, (int, float)) else [float(x) for x in v]
                 for v in normalization)
    pixels = mean == [0.0] and std == [1.0]
    image.description = ("RGB image, pixel values in [0, 255]." if pixels or input_dtype == "uint8"
                         else f"RGB image normalized as (pixel - {mean}) / {std}.")
    if input_dtype != "uint8":
        unit = meta_fb.ProcessUnitT()
        unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
        unit.options = meta_fb.NormalizationOptionsT()
        unit.options.mean, unit.options.std = mean, std
        image.processUnits = [unit]
    image.stats = meta_fb.StatsT()
    image.stats.min, image.stats.max = [0.0], [255.0]
    return image


def labels_file_metadata(description):
    """The associated labels file of an output tensor (one class name per line)."""
    labels_file = meta_fb.AssociatedFileT()
    labels_file.name = LABELS_FILE
    labels_file.description = description
    labels_file.type = meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    return labels_file


def pack_metadata(image, output, *, name, description, version, author, license):
    """The metadata flatbuffer (bytes) of a one-image-in, one-tensor-out model."""
    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [output]
    model = meta_fb.ModelMetadataT()
    model.name, model.description, model.version = name, description, version
    model.author, model.license = author, license
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = __import__("flatbuffers").Builder(0)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def build_metadata(*, name, description, version, author, license, labels=None,
                   input_dtype="float32", normalization=(0.0, 1.0), output_kind="probabilities"):
    """The metadata flatbuffer (bytes) of a one-image-in, one-vector-out classifier
    (`normalization`: see `image_metadata`)."""
    scores = meta_fb.TensorMetadataT()
    scores.name = "probability" if output_kind == "probabilities" else "logits"
    scores.description = ("Softmax probability of each class (they sum to 1)."
                          if output_kind == "probabilities" else
                          "Logit (unnormalized score) of each class; apply softmax for probabilities.")
    scores.content = meta_fb.ContentT()
    scores.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    scores.content.contentProperties = meta_fb.FeaturePropertiesT()
    if output_kind == "probabilities":
        scores.stats = meta_fb.StatsT()
        scores.stats.min, scores.stats.max = [0.0], [1.0]
    if labels is not None:
        scores.associatedFiles = [labels_file_metadata("Class names, one per line, in output order.")]
    return pack_metadata(image_metadata(input_dtype, normalization), scores, name=name,
                         description=description, version=version, author=author,
                         license=license)


def attach_metadata(model_content, metadata, labels=None):
    """`model_content` (TFLite bytes) with `metadata` in its TFLITE_METADATA buffer and,
    if given, the labels packed as the associated file LABELS_FILE."""
    import flatbuffers

    schema = _tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_content, 0))
    buffer = schema.BufferT()
    buffer.data = list(metadata)
    model.buffers = model.buffers or []
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) != METADATA_NAME]
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    content = bytes(builder.Output())
    if labels is None:
        return content
    archive = io.BytesIO(content)
    archive.seek(0, io.SEEK_END)
    # Stored, not deflated: readers map the file and read associated files in place.
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as packed:
        packed.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    return archive.getvalue()


def read_metadata(path):
    """`{"model": ModelMetadataT, "files": {name: bytes}}` of a `.tflite` file (None
    model when it has no metadata): what a reader such as MediaPipe sees."""
    with open(path, "rb") as f:
        content = f.read()
    schema = _tflite_schema()
    model = schema.Model.GetRootAs(content, 0)
    found = None
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == METADATA_NAME:
            data = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            found = meta_fb.ModelMetadataT.InitFromObj(meta_fb.ModelMetadata.GetRootAs(data, 0))
    files = {}
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as packed:
            files = {name: packed.read(name) for name in packed.namelist()}
    return {"model": found, "files": files}
