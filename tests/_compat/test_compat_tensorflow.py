"""Each wrapper of a private TensorFlow API (keras_pf/_compat/tensorflow.py, written for
TensorFlow 2.21)."""

import numpy as np
import tensorflow as tf

from keras_pf._compat import tensorflow as compat


def test_written_for_this_tensorflow():
    assert tf.__version__.startswith(compat.TENSORFLOW_VERSION), (
        f"keras_pf/_compat/tensorflow.py was written for TensorFlow {compat.TENSORFLOW_VERSION}, "
        f"this is {tf.__version__}: re-check each wrapper")


def _converter():
    weight = tf.Variable(np.full((4, 2), 0.5, "float32"))

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def f(x):
        return tf.nn.relu(tf.matmul(x, weight))

    return compat.freeze_concrete_function(f.get_concrete_function())


def test_freeze_concrete_function_has_no_variables():
    frozen = _converter()
    assert not frozen.variables
    np.testing.assert_allclose(frozen(tf.ones((1, 4)))[0].numpy() if isinstance(frozen(tf.ones((1, 4))), list)
                               else frozen(tf.ones((1, 4))).numpy(), [[2.0, 2.0]])


def _tflite(quantize=False):
    frozen = _converter()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.random.rand(1, 4).astype("float32")] for _ in range(4))
    return converter


def test_ops_details_lists_each_node():
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=_tflite().convert())
    ops = compat.ops_details(interp)
    assert ops and {"op_name", "inputs", "outputs"} <= set(ops[0])
    assert "FULLY_CONNECTED" in [op["op_name"] for op in ops]


def test_calibrate_only_then_mlir_quantize():
    converter = _tflite(quantize=True)
    calibrated = compat.calibrate_only(converter)
    assert calibrated[4:8] == b"TFL3"
    quantized = compat.mlir_quantize(calibrated, converter)
    floats = compat.mlir_quantize(calibrated, converter, denylisted_ops=["FULLY_CONNECTED"])
    assert quantized[4:8] == b"TFL3" and quantized != floats


def test_tflite_schema_and_flatbuffer_utils_read_a_file():
    content = _tflite().convert()
    model = compat.tflite_flatbuffer_utils().convert_bytearray_to_object(bytearray(content))
    codes = {max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes}
    assert compat.tflite_schema().BuiltinOperator.FULLY_CONNECTED in codes


def test_configure_coordination_is_importable():
    # starting a coordination service needs a cluster (tests/training/test_multiworker.py
    # runs one); here: the private modules it uses still exist
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2  # noqa: F401
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    assert callable(multi_worker_util.coordination_leader)
    assert hasattr(context.context(), "configure_coordination_service")
