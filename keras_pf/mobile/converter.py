"""Running the TFLite converter: a Keras 3 model through a temporary SavedModel (the
path Keras' own `model.export(format="litert")` takes), a tf_keras (QAT) model through
a concrete function; both restricted to TFLite builtins. Temporary SavedModels live in
the process's private folder under `$TMPDIR/keras_pf-<uid>/` (`keras_pf.tempfiles`);
the next run of any command removes those of a killed process. Folders of the older
`<tempdir>/keras_pf_export_<pid>_*` kind are still removed by the next export."""

import contextlib
import os
import shutil
import tempfile

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
    """Remove the temporary SavedModels of exports whose process is gone (killed)."""
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



def convert(model, configure, run):
    """TFLite bytes of a batch-1 Keras 3 model, via a SavedModel (the path Keras' own
    `model.export(format="litert")` takes) in a temporary folder, restricted to TFLite
    builtins so that a Flex op fails here rather than on the phone. `configure(converter)`
    sets the precision, `run(converter)` converts."""
    import tensorflow as tf
    from keras.export import ExportArchive

    with temp_dir() as saved_dir:
        archive = ExportArchive()
        archive.track(model)
        spec = tf.TensorSpec(tuple(model.input_shape), model.inputs[0].dtype, name=model.inputs[0].name)
        archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
        archive.write_out(saved_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        configure(converter)
        return run(converter)


def convert_tf_keras(model, configure, run, include_preprocessing=False, input_dtype="float32"):
    """TFLite bytes of a tf_keras model (the QAT models of `keras_pf.mobile.qat`),
    optionally with the ImageNet normalization in front (float ops before the first
    quantize op)."""
    import tensorflow as tf

    shape = (1, *model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8 if input_dtype == "uint8" else tf.float32)])
    def serve(x):
        x = tf.cast(x, tf.float32)
        if include_preprocessing:
            from keras_pf.models.imagenet import MEAN, STD

            x = (x - tf.constant([255.0 * m for m in MEAN])) / tf.constant([255.0 * s for s in STD])
        return model(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(converter)
    return run(converter)


def is_tf_keras(model):
    import keras

    return not isinstance(model, keras.Model)
