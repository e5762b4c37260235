"""Everything mobile, one module per concern: `export` (Keras -> TFLite files),
`metadata` (TFLite model metadata: what MediaPipe and the Task Library read),
`quantization` (quantization-aware training through tfmot), `check` (reading files back
and comparing them with Keras), `pipeline` (fine-tune -> QAT -> int8 file + report).
TensorFlow-specific, so imported only when used."""
