"""TensorFlow internals (written for TensorFlow 2.21): graph freezing, the TFLite
interpreter's op records, the converter's calibrate-only mode and MLIR quantizer, the
TFLite flatbuffer schema, and multi-worker coordination."""

TENSORFLOW_VERSION = "2.21"


def freeze_concrete_function(concrete_function):
    """`concrete_function` with its variables as constants (as a full export has)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete_function)


def ops_details(interpreter):
    """The interpreter's op records: `[{"op_name", "index", "inputs", "outputs"}, ...]`
    of every node in execution order (LiteRT's `Interpreter._get_ops_details`)."""
    return interpreter._get_ops_details()


def calibrate_only(converter):
    """The calibrated (not yet quantized) model bytes of `converter` (optimizations and
    representative dataset set): the first call `QuantizationDebugger` makes."""
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    return converter.convert()


def mlir_quantize(calibrated, converter, denylisted_nodes=None, denylisted_ops=None):
    """Quantize calibrated model bytes with TFLite's MLIR quantizer, leaving the
    denylisted nodes (by output name) and ops (by type) float: the second call
    `QuantizationDebugger` makes."""
    from tensorflow.lite.python import convert as tflite_convert

    return tflite_convert.mlir_quantize(
        calibrated, disable_per_channel=converter._experimental_disable_per_channel,
        denylisted_nodes=denylisted_nodes, denylisted_ops=denylisted_ops)


def tflite_schema():
    """TensorFlow's generated TFLite flatbuffer schema module."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def tflite_flatbuffer_utils():
    """TensorFlow's TFLite flatbuffer read/write helpers (`tensorflow.lite.tools`)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils


def configure_coordination(spec, timeout):
    """Start TensorFlow's coordination service for the cluster `spec` (chief and workers)
    with a registration deadline of `timeout` seconds, unless one runs already: what
    MultiWorkerMirroredStrategy sets up itself, but TensorFlow's default waits an hour."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return False
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
                          for job in ("chief", "worker") if job in spec.jobs],
        cluster_register_timeout_in_ms=int(timeout * 1000),
    )
    return True
