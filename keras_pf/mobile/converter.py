"""Running the TFLite converter on a traced, frozen function of a Keras 3 model or of a
tf_keras (QAT) model, restricted to TFLite builtins, with a `serving_default` signature;
and the temporary folders of exports that need one (`temp_dir`): in the process's
private folder under `$TMPDIR/keras_pf-<uid>/` (`keras_pf.tempfiles`), so the next run of
any command removes those of a killed process. Folders of the older
`<tempdir>/keras_pf_export_<pid>_*` kind are still removed by the next export."""

import contextlib
import os
import shutil
import tempfile
import warnings

TEMP_PREFIX = "keras_pf_export_"



def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temp_dirs(root=None):
    """Remove the older `keras_pf_export_<pid>_*` temporary folders of exports whose
    process is gone (killed)."""
    root = root or tempfile.gettempdir()
    try:
        entries = os.listdir(root)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(TEMP_PREFIX):
            continue
        pid = entry[len(TEMP_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


@contextlib.contextmanager
def temp_dir():
    """A temporary folder removed on every exit path, in this process's private folder
    (`keras_pf.tempfiles`: a killed process's folders are removed by the next run of
    any command); folders of the older `keras_pf_export_<pid>_*` kind are removed too."""
    from keras_pf import tempfiles

    remove_stale_temp_dirs()
    with tempfiles.private_dir(TEMP_PREFIX) as path:
        yield path


def remove_stale_partials(path):
    """Partial `.tmp_*<name>` files that a killed export left beside `path`."""
    directory, base = os.path.split(os.path.abspath(path))
    if os.path.isdir(directory):
        for entry in os.listdir(directory):
            if entry.startswith(".tmp_") and entry.endswith(base):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, entry))



def _output_names(concrete_function):
    """The serving signature's output names, as a SavedModel names them: a dict's keys
    (sorted, TensorFlow's flattening order), else output_0, output_1, ..."""
    outputs = concrete_function.structured_outputs
    if isinstance(outputs, dict):
        return sorted(outputs)
    count = len(outputs) if isinstance(outputs, (list, tuple)) else 1
    return [f"output_{i}" for i in range(count)]


def with_serving_signature(content, input_names, output_names):
    """TFLite bytes `content` with a `serving_default` signature over its one subgraph's
    inputs and outputs, in order (what a SavedModel's conversion carries, and what
    LiteRT's `get_signature_runner` and Android's `runSignature` look up)."""
    import flatbuffers

    from keras_pf._compat.tensorflow import tflite_schema

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    graph = model.subgraphs[0]
    if len(graph.inputs) != len(input_names) or len(graph.outputs) != len(output_names):
        raise RuntimeError(f"TFLite converter gave {len(graph.inputs)} input(s) and "
                           f"{len(graph.outputs)} output(s) for {input_names} -> {output_names}")

    def tensor_maps(names, indices):
        maps = []
        for name, index in zip(names, indices):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name, int(index)
            maps.append(entry)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = tensor_maps(input_names, graph.inputs)
    signature.outputs = tensor_maps(output_names, graph.outputs)
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def _convert_function(function, model, input_name, configure, run):
    """TFLite bytes of the traced `function` of one input, restricted to TFLite builtins
    so that a Flex op fails here rather than on the phone, with a serving signature.

    The converter takes the frozen function directly. Given a model (or anything
    trackable), it would first save it to a SavedModel and load that back (Keras'
    `model.export(format="litert")` writes one itself): 3.1 of 3.7 s of a small
    model's export, 22 of 25 s of a QAT model's (whose training functions and optimizer
    are saved too), in a folder of tempfile's own that a kill left behind. The model is
    passed only to keep its variables alive while the function holds them."""
    import tensorflow as tf

    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.experimental_lower_to_saved_model = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(converter)
    with warnings.catch_warnings():
        # From a graph (not a SavedModel) the converter asks for input statistics when it
        # calibrates or converts a QAT graph; they apply only to quantized inputs, and
        # every file here takes float32 (or uint8 cast to float in the graph).
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        content = run(converter)
    return with_serving_signature(content, [input_name], _output_names(concrete))


def convert(model, configure, run):
    """TFLite bytes of a batch-1 Keras 3 model. `configure(converter)` sets the
    precision, `run(converter)` converts."""
    import tensorflow as tf

    name = model.inputs[0].name
    spec = tf.TensorSpec(tuple(model.input_shape), model.inputs[0].dtype, name=name)
    serve = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return _convert_function(serve, model, name, configure, run)


def convert_tf_keras(model, configure, run, include_preprocessing=False, input_dtype="float32"):
    """TFLite bytes of a tf_keras model (the QAT models of `keras_pf.mobile.qat`),
    optionally with the ImageNet normalization in front (float ops before the first
    quantize op)."""
    import tensorflow as tf

    shape = (1, *model.input_shape[1:])
    name = "pixels" if include_preprocessing else "image"  # as `mobile.export.mobile_model`

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8 if input_dtype == "uint8" else tf.float32,
                                                name=name)])
    def serve(x):
        x = tf.cast(x, tf.float32)
        if include_preprocessing:
            from keras_pf.models.imagenet import MEAN, STD

            x = (x - tf.constant([255.0 * m for m in MEAN])) / tf.constant([255.0 * s for s in STD])
        return model(x, training=False)

    return _convert_function(serve, model, name, configure, run)


def is_tf_keras(model):
    import keras

    return not isinstance(model, keras.Model)
