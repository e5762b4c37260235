"""Private TensorFlow/Keras APIs keras_pf relies on, one module per concern, each with a
test, so that a TensorFlow or Keras upgrade that moves one breaks in one place."""
