"""OpenVINO IR export (`model.xml` + `model.bin`, float32 weights), checked in the
OpenVINO runtime.

The model is exported as a SavedModel by Keras' own exporter (called once first), then
converted by OpenVINO's own `openvino.convert_model` from that folder (one output, named
`logits` or `probabilities`; converting Keras' traced function instead, as Keras'
`model.export(format="openvino")` does, can add stray outputs). The weights stay float32
(`compress_to_fp16=False`).

OpenVINO's CPU plugin computes in bfloat16 by default on CPUs with bfloat16 support
(AVX512_BF16, AMX): there a float32 file gives differences of ~1e-2. `compiled(...)` and
`--check` ask for float32 (`INFERENCE_PRECISION_HINT: f32`); an application that wants
float32 results must do the same.
"""

import os
import shutil

from keras_pf.export import common
from keras_pf.files import atomic_output

SUFFIX = ".xml"


def bin_path(path):
    return os.fspath(path)[: -len(SUFFIX)] + ".bin"


def export_openvino(model, path, include_preprocessing=False, input_dtype="float32", labels=None,
                    batch_size=None):
    """Write `model` as OpenVINO IR to `path` (".xml", with its ".bin" beside it, both
    atomically) and its class names as `<path without .xml>.labels.txt`; return `path`.
    Preprocessing, input and output as in `keras_pf.export.onnx.export_onnx`. Raises
    ValueError, writing nothing, for a model OpenVINO cannot convert."""
    common.require("openvino")
    import openvino as ov

    from keras_pf.mobile.converter import temp_dir as _temp_dir

    path = common.check_file_output(path, SUFFIX, "OpenVINO")
    labels = common.labels_for(model, labels)
    common.remove_stale_partials(path)
    common.remove_stale_partials(bin_path(path))
    wrapped = common.prepared_model(model, include_preprocessing, input_dtype, batch_size)
    with _temp_dir() as tmp:
        saved = os.path.join(tmp, "saved_model")
        wrapped.export(saved, format="tf_saved_model", verbose=False,
                       input_signature=common.signature(wrapped))
        try:
            converted = ov.convert_model(saved)
        except Exception as error:  # OpConversionFailure and others
            raise ValueError(f"OpenVINO cannot convert {model.name!r} ({_reason(error)}): the "
                             "model cannot be expressed in OpenVINO IR, nothing was written. "
                             "Try --format saved_model.") from None
        converted.outputs[0].get_tensor().set_names({common.output_name(model)})
        # OpenVINO writes the .bin beside the path it is given (resolving links), so the
        # pair is written in the private folder and each file copied into its own atomic
        # output: the .bin first, so that an .xml in place always has its .bin (the .xml
        # finds it by its own stem).
        staged = os.path.join(tmp, "model.xml")
        ov.save_model(converted, staged, compress_to_fp16=False)
        for source, target in ((bin_path(staged), bin_path(path)), (staged, path)):
            with atomic_output(target) as out:
                shutil.copyfile(source, out)
    common.write_labels(labels_path(path), labels)
    return path


def _reason(error):
    """The line of OpenVINO's conversion report that names the ops ("No conversion rule
    found for operations: Lgamma"), else the error's first line."""
    for line in str(error).splitlines():
        if "operations:" in line or "operation(s):" in line:
            return line.strip(" -")
    return f"{type(error).__name__}: {common.first_line(error)}"


def labels_path(path):
    return common.labels_path(path, SUFFIX)


def compiled(path, threads=None, precision="f32"):
    """The file compiled for OpenVINO's CPU plugin, computing in `precision` ("f32";
    None: the plugin's default, bfloat16 on CPUs that have it), latency mode,
    `threads` inference threads."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(os.fspath(path), "CPU", config)


def default_precision():
    """The CPU plugin's default inference precision here ("f32" or "bf16")."""
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return hint.to_string() if hasattr(hint, "to_string") else str(hint)


def run_openvino(path, images, threads=None, precision="f32"):
    """The file's outputs on `images` (one batch) in OpenVINO (float32 by default)."""
    import numpy as np

    model = compiled(path, threads, precision)
    dtype = np.uint8 if model.inputs[0].get_element_type().get_type_name() == "u8" else np.float32
    return np.asarray(model(np.asarray(images).astype(dtype))[0])


def check_openvino(model, path, images, include_preprocessing=False):
    """How closely the file, run in OpenVINO (float32), matches `model` on `images`."""
    return common.compare(model, path, run_openvino(path, images), images, "openvino",
                          "OpenVINO (f32)", include_preprocessing)
