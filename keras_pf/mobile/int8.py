"""Post-training int8 conversion that keeps float the ops the phone's CPU delegate
(XNNPACK) cannot run in int8 (`convert_int8`), read off the converted file itself."""

from keras_pf._compat.tensorflow import calibrate_only, mlir_quantize, ops_details

# Rounds of "quantize, find the int8 ops XNNPACK leaves to reference kernels, keep them
# float"; each round only finds ops the previous one exposed (two suffice for ViT/PiT).
_FALLBACK_ROUNDS = 4
# `kept_float`'s node name for an op kept float by its type (every node of it)
BY_OP_TYPE = "(every node of this op)"


def _output_names(content):
    """`{op_name: [output tensor names]}` of a `.tflite` file's bytes."""
    from keras_pf.mobile.check import interpreter

    interp = interpreter(content, delegate=False)
    tensors = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    names = {}
    for op in ops_details(interp):
        names.setdefault(op["op_name"], []).extend(tensors[i] for i in op["outputs"])
    return names


def _calibrated_name(names, op, name):
    """The calibrated model's name of the `op` node whose quantized output is `name`:
    the same name, else the longest one `name` extends (the quantizer uniquifies names by
    appending digits); None if there is none."""
    candidates = names.get(op, [])
    if name in candidates:
        return name
    extended = [n for n in candidates if name.startswith(n)]
    return max(extended, key=len) if extended else None


def convert_int8(converter, float_fallback=True):
    """`(tflite bytes, kept_float, left)`: the int8 conversion of `converter`
    (optimizations and representative dataset already set), with float input and output.

    With `float_fallback`, every op that XNNPACK (TFLite's CPU delegate, used by
    LiteRT, MediaPipe and the Android interpreter by default) has no int8 kernel for is
    kept float: GELU, the pieces LayerNorm lowers to (SQUARED_DIFFERENCE, RSQRT, the
    variance's ADD), attention's BATCH_MATMUL and SOFTMAX. Quantized, those run on
    TFLite's reference kernels and made ViT/PiT int8 files 2x slower than float32; kept
    float, they cost a QUANTIZE/DEQUANTIZE pair each and run in XNNPACK. Which ops these
    are is read off the file itself, not listed by hand, so any model gets the same
    treatment. `kept_float` lists them as `(op, output tensor name)`, `left` the int8
    ops still left to reference kernels after the last round (none so far).

    Without `float_fallback` every op is quantized (what an NPU delegate needing a fully
    int8 graph wants; slower on phone CPUs for the transformers).

    Calibration runs once: the converter only calibrates, then TFLite's MLIR quantizer
    quantizes the calibrated model, with a denylist of nodes. These are the two calls
    `tf.lite.experimental.QuantizationDebugger` makes (public, but it also builds a
    numeric-verify debug model that is not needed here); TensorFlow is pinned to 2.21.
    """
    from keras_pf.mobile.check import undelegated_int8_nodes

    calibrated = calibrate_only(converter)
    names = _output_names(calibrated)
    kept_float = []
    for round_ in range(_FALLBACK_ROUNDS):
        content = mlir_quantize(
            calibrated, converter, denylisted_nodes=[n for _, n in kept_float if n != BY_OP_TYPE] or None,
            denylisted_ops=[op for op, n in kept_float if n == BY_OP_TYPE] or None)
        if not float_fallback:
            return content, [], []
        left = undelegated_int8_nodes(content)
        if not left or round_ + 1 == _FALLBACK_ROUNDS:
            break
        for op, name in left:
            node = _calibrated_name(names, op, name)
            # the quantizer renames some tensors (a model output gets a suffix), so a
            # node it cannot find by name is kept float by its op type
            if node is None or (op, node) in kept_float:
                node = BY_OP_TYPE
            if (op, node) not in kept_float:
                kept_float.append((op, node))
    if left:  # report as float only what is
        left_nodes = {_calibrated_name(names, op, name) for op, name in left}
        left_ops = {op for op, _ in left}
        kept_float = [(op, node) for op, node in kept_float
                      if node not in left_nodes and not (op in left_ops and node == BY_OP_TYPE)]
    return content, kept_float, left
