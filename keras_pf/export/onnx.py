"""ONNX export, through Keras' own exporter (`model.export(format="onnx")`, i.e. tf2onnx),
checked in ONNX Runtime.

On top of Keras' exporter: the model is called once first (Keras refuses a model never
called), the ImageNet normalization can go inside, the batch is variable, the output is
named `logits` or `probabilities`, any `Erfc` left in the graph (Keras' own `"gelu"` on
TensorFlow, e.g. in a `.keras` file saved before keras_pf's GELU went through `erf`)
becomes `1 - Erf` (ONNX has no Erfc), an op ONNX cannot express is an error rather than a
file ONNX Runtime refuses, and the file is written atomically once ONNX Runtime has
loaded it.
"""

import contextlib
import logging
import os
import warnings

from keras_pf.export import common
from keras_pf.files import atomic_output

SUFFIX = ".onnx"
# 17: LayerNormalization's era; Erf (GELU) needs 9, CastLike (the Erfc rewrite) 15.
OPSET = 17


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx logs its version banner and every unsupported op at ERROR level; the
    unsupported ops are reported here as one message instead."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def replace_erfc(graph):
    """Rewrite every `Erfc(z)` node of the ONNX `graph` as `Sub(1, Erf(z))` (the constant
    cast like `z`); return how many there were. Exact up to float rounding."""
    from onnx import helper

    count, nodes = 0, []
    for node in graph.node:
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        count += 1
        z, out, stem = node.input[0], node.output[0], node.name or f"erfc{count}"
        one = helper.make_tensor(stem + "/one", 1, [], [1.0])  # float32 scalar
        nodes += [
            helper.make_node("Erf", [z], [stem + "/erf"], name=stem + "/Erf"),
            helper.make_node("Constant", [], [stem + "/one"], name=stem + "/One", value=one),
            helper.make_node("CastLike", [stem + "/one", z], [stem + "/one_like"],
                             name=stem + "/OneLike"),
            helper.make_node("Sub", [stem + "/one_like", stem + "/erf"], [out], name=stem + "/Sub"),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def unsupported_ops(graph):
    """`{op_type: count}` of the graph's nodes that no ONNX operator set defines (tf2onnx
    leaves a TensorFlow op it cannot convert in the graph under its own name)."""
    import onnx

    found = {}
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


def _rename_output(graph, name):
    old = graph.output[0].name
    if old == name:
        return
    for node in graph.node:
        for i, value in enumerate(node.output):
            if value == old:
                node.output[i] = name
        for i, value in enumerate(node.input):
            if value == old:
                node.input[i] = name
    graph.output[0].name = name


def session(path, threads=None):
    """An ONNX Runtime CPU session of the file (`threads`: intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def export_onnx(model, path, include_preprocessing=False, input_dtype="float32", labels=None,
                batch_size=None, opset=OPSET):
    """Write `model` as an ONNX file to `path` (ending in ".onnx", atomically) and its
    class names beside it (`<path without .onnx>.labels.txt`); return `path`.

    `include_preprocessing`: the file takes RGB pixels 0..255 (`input_dtype` "float32"
    or "uint8") and normalizes inside; otherwise it takes `keras_pf.preprocess_input`'s
    output. The input is named `pixels` or `image`, NHWC, batch `batch_size` (None:
    variable); the output `logits` or `probabilities`. Raises ValueError, writing
    nothing, for a model with an op ONNX cannot express.
    """
    common.require("onnx")
    import onnx

    path = common.check_file_output(path, SUFFIX, "ONNX")
    labels = common.labels_for(model, labels)
    common.remove_stale_partials(path)
    from keras_pf.export.rewrite import grouped_convolutions_as_depthwise

    # PiT's grouped pooling convolution: an XLA function tf2onnx cannot inline
    wrapped = common.prepared_model(grouped_convolutions_as_depthwise(model),
                                    include_preprocessing, input_dtype, batch_size)
    with atomic_output(path) as tmp:
        try:
            with _quiet_tf2onnx(), warnings.catch_warnings():
                # Keras' tf2onnx patch probes `np.object` (numpy 2's FutureWarning)
                warnings.simplefilter("ignore", FutureWarning)
                wrapped.export(tmp, format="onnx", verbose=False, opset_version=opset,
                               input_signature=common.signature(wrapped))
        except Exception as error:  # tf2onnx raises many types for an op it cannot map
            raise ValueError(f"tf2onnx cannot convert {model.name!r} to ONNX "
                             f"({type(error).__name__}: {common.first_line(error)}); "
                             "nothing was written. Try --format saved_model or openvino.") from None
        proto = onnx.load(tmp)
        replace_erfc(proto.graph)
        missing = unsupported_ops(proto.graph)
        if missing:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(missing.items()))
            raise ValueError(f"ONNX (opset {opset}) has no operator for {ops} in {model.name!r}: "
                             "the model cannot be expressed in ONNX, nothing was written. "
                             "Try --format saved_model or openvino.")
        _rename_output(proto.graph, common.output_name(model))
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        try:
            session(tmp)
        except Exception as error:
            raise ValueError(f"ONNX Runtime cannot load the ONNX file of {model.name!r} "
                             f"({common.first_line(error)}); nothing was written.") from None
    common.write_labels(labels_path(path), labels)
    return path


def labels_path(path):
    return common.labels_path(path, SUFFIX)


def run_onnx(path, images, threads=None):
    """The file's outputs on `images` (one batch) in ONNX Runtime."""
    import numpy as np

    sess = session(path, threads)
    inp = sess.get_inputs()[0]
    dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
    return sess.run(None, {inp.name: np.asarray(images).astype(dtype)})[0]


def check_onnx(model, path, images, include_preprocessing=False):
    """How closely the file, run in ONNX Runtime, matches `model` on `images`."""
    return common.compare(model, path, run_onnx(path, images), images, "onnx",
                          "ONNX Runtime", include_preprocessing)
