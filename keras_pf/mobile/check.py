"""Reading exported `.tflite` files back: run them in LiteRT, list their ops, their
weight and activation types, and compare them with the Keras model they came from."""

import os

import numpy as np

from keras_pf._compat.tensorflow import ops_details

DYNAMIC_SHAPE_OPS = frozenset({
    "SHAPE", "GATHER", "GATHER_ND", "PACK", "UNPACK", "STRIDED_SLICE", "SLICE", "FILL",
    "RANGE", "BROADCAST_ARGS", "BROADCAST_TO", "WHERE", "SIZE", "RANK", "DYNAMIC_UPDATE_SLICE",
})


# ---------------------------------------------------------------------- run and inspect


def interpreter(path, delegate=True, num_threads=None):
    """A LiteRT interpreter of `path` (or of the file's bytes), tensors allocated.
    `delegate=False` runs the builtin kernels only (no XNNPACK), which is how the raw op
    list is read."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if delegate
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    source = ({"model_content": path} if isinstance(path, bytes)
              else {"model_path": os.fspath(path)})
    interp = Interpreter(**source, num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


def run_tflite(path, images, delegate=True, num_threads=None):
    """Outputs (numpy, float32) of the `.tflite` file on `images`, one image at a time,
    with the interpreter's default (XNNPACK) delegate. Quantized outputs are
    dequantized."""
    interp = interpreter(path, delegate, num_threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    images = np.asarray(images)
    results = []
    for image in images:
        x = image[None]
        if inp["dtype"] in (np.int8, np.uint8) and inp["quantization"][0] and not np.issubdtype(images.dtype, np.integer):
            scale, zero = inp["quantization"]
            x = np.round(x / scale + zero)
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8) and out["quantization"][0]:
            scale, zero = out["quantization"]
            y = (y.astype("float32") - zero) * scale
        results.append(y[0].astype("float32"))
    return np.stack(results)


def tflite_ops(path):
    """The op names of the file's graph, in execution order (builtin kernels, no delegate)."""
    return [op["op_name"] for op in ops_details(interpreter(path, delegate=False))]


def _undelegated(path):
    """The interpreter and the op records (`_get_ops_details`) of the nodes the default
    (XNNPACK) delegate leaves to builtin kernels.

    Applying a delegate appends one "DELEGATE" node per partition and keeps the original
    nodes in the node list, so membership is rebuilt from the graph: a partition is every
    node reached walking back from its DELEGATE node's outputs, stopping at that node's
    inputs. Any original node in no partition runs outside the delegate.
    """
    interp = interpreter(path, delegate=True)
    ops = ops_details(interp)
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {t: op["index"] for op in originals for t in op["outputs"]}
    delegated = set()
    for node in ops:
        if node["op_name"] != "DELEGATE":
            continue
        boundary = set(node["inputs"])
        stack = [t for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer:
                continue
            index = producer[tensor]
            if index not in delegated:
                delegated.add(index)
                stack.extend(ops[index]["inputs"])
    return interp, [op for op in originals if op["index"] not in delegated]


def undelegated_ops(path):
    """Ops the default (XNNPACK) delegate leaves to builtin kernels: `{op_name: count}`."""
    remaining = {}
    for op in _undelegated(path)[1]:
        remaining[op["op_name"]] = remaining.get(op["op_name"], 0) + 1
    return remaining


def undelegated_int8_nodes(path):
    """`[(op_name, output tensor name)]` of the int8 ops (int8 output) that the default
    (XNNPACK) delegate leaves to TFLite's reference kernels: the ops to keep float."""
    interp, ops = _undelegated(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return [(op["op_name"], tensors[op["outputs"][0]]["name"]) for op in ops
            if op["outputs"] and np.dtype(tensors[op["outputs"][0]]["dtype"]) == np.int8]


def dynamic_ops(path):
    """Ops in the file that compute shapes at run time or need the Flex (TF) runtime."""
    return sorted({op for op in tflite_ops(path)
                   if op in DYNAMIC_SHAPE_OPS or op.startswith("Flex") or op == "CUSTOM"})


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def weight_dtypes(path):
    """`{op_name: sorted dtype names of its weights}` for convolutions and dense layers
    (second input of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED): shows whether an int8
    file really runs int8 weights, or dequantizes them first (then the weight input is
    float, produced by a DEQUANTIZE op)."""
    interp = interpreter(path, delegate=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = ops_details(interp)
    # float16 weights are stored as float16 and widened by a DEQUANTIZE op at load time
    dequantized = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
    found = {}
    for op in ops:
        if op["op_name"] in WEIGHTED_OPS[:3] and len(op["inputs"]) > 1:
            weight = dequantized.get(op["inputs"][1], op["inputs"][1])
            found.setdefault(op["op_name"], set()).add(dtypes[weight])
    return {name: sorted(kinds) for name, kinds in found.items()}


def integer_ops(path):
    """How many convolution/dense ops run on int8 activations (their first input is int8)."""
    interp = interpreter(path, delegate=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    return sum(1 for op in ops_details(interp)
               if op["op_name"] in WEIGHTED_OPS and len(op["inputs"]) and dtypes[op["inputs"][0]] == "int8")


def check_precision(path, precision):
    """Raise ValueError unless the converted file (path or bytes) really has `precision`:
    int8 weights and int8 activations for "int8", int8 weights for "dynamic", float16
    weights for "float16", only float32 weights for "float32". TFLiteConverter falls
    back to a wider type silently (e.g. int8 without calibration data), so the file is
    read back rather than trusted."""
    weights = {kind for kinds in weight_dtypes(path).values() for kind in kinds}
    found = ", ".join(sorted(weights)) or "no weighted ops"
    if precision == "int8":
        ok = "int8" in weights and integer_ops(path) > 0
    elif precision == "dynamic":
        ok = "int8" in weights
    elif precision == "float16":
        ok = "float16" in weights
    else:
        ok = weights <= {"float32"}
    if not ok:
        raise ValueError(
            f"The converter produced a file that is not {precision} (weights: {found}; "
            f"{integer_ops(path)} ops on int8 activations); nothing was written. This is a "
            "conversion fault: report it with the model and the command.")


# ------------------------------------------------------------------------------ check


def check_tflite(model, path, images, include_preprocessing=False):
    """How faithful the `.tflite` file at `path` is to `model` on `images` (as the file
    consumes them). Returns a dict:

    - `max_abs_diff`, `mean_abs_diff`: TFLite vs Keras outputs (for a float32 file
      this should be ~1e-6; reduced precisions are judged by the next two),
    - `top1_agreement`: fraction of images whose top-1 class matches Keras'
      (classifiers); `pixel_agreement`: fraction of pixels whose argmax class matches
      Keras' (segmenters, `(batch, height, width, classes)` outputs),
    - `dynamic_ops`: shape-computing or Flex ops in the file (should be empty),
    - `undelegated_ops`: `{op: count}` left outside the XNNPACK delegate,
    - `weight_dtypes`, `size_bytes`.
    """
    images = np.asarray(images)
    keras_in = images.astype("float32")
    if include_preprocessing:
        from keras_pf.models.imagenet import preprocess_input

        keras_in = preprocess_input(keras_in)
    reference = np.asarray(model(keras_in, training=False), dtype="float32")
    outputs = run_tflite(path, images)
    diff = np.abs(outputs - reference)
    report = {
        "path": os.fspath(path),
        "size_bytes": os.path.getsize(path),
        "images": len(images),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "dynamic_ops": dynamic_ops(path),
        "undelegated_ops": undelegated_ops(path),
        "weight_dtypes": weight_dtypes(path),
    }
    if reference.ndim == 2:
        report["top1_agreement"] = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
    elif reference.ndim == 4:
        report["pixel_agreement"] = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
    return report


def format_check(reports):
    """A Markdown table of `check_tflite` reports (one row per file)."""
    kind = ("pixel" if any("pixel_agreement" in r for r in reports) else
            "detection" if any("detection_agreement" in r for r in reports) else "top-1")
    rows = [f"| file | size (KB) | max abs diff | mean abs diff | {kind} agreement | weights "
            "| dynamic ops | ops outside XNNPACK |",
            "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        agreement = r.get("top1_agreement", r.get("pixel_agreement", r.get("detection_agreement")))
        agreement = "-" if agreement is None else f"{100 * agreement:.1f}%"
        weights = ", ".join(f"{k}: {'/'.join(v)}" for k, v in r["weight_dtypes"].items())
        outside = ", ".join(f"{k} x{n}" for k, n in sorted(r["undelegated_ops"].items())) or "none"
        rows.append(
            f"| {os.path.basename(r['path'])} | {r['size_bytes'] / 1024:.0f} | "
            f"{r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} | {agreement} | {weights} | "
            f"{', '.join(r['dynamic_ops']) or 'none'} | {outside} |")
    return "\n".join(rows)
