"""Every private TensorFlow, tf_keras and Keras API keras_pf uses, in one place.

Each function here wraps one private name and says which release it was written for;
`tests/_compat/` has a test per function that fails, naming the function, when an
upgrade removes or changes the name. Nothing outside this package may touch a private
TensorFlow/Keras API (`tests/_compat/test_no_private_api.py` checks the tree).

- `keras`: Keras 3 (written for 3.15) functional-graph internals (nodes, history,
  `_run_through_graph`, the trainer's symbolic build).
- `tensorflow`: TensorFlow 2.21 (graph freezing, TFLite interpreter op details, the
  MLIR quantizer, the TFLite flatbuffer schema, multi-worker coordination, whether a
  graph is traced for XLA).
- `tf_keras`: tf_keras 2.21 (Keras 2) MultiHeadAttention internals, for the QAT twin.
- `keras_hub`: keras-hub 0.32 preset registration (`register_presets`, the preset file
  names, upload_preset's folder check), for keras_pf.hub; needs keras-hub.
"""
