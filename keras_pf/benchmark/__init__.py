"""`keras-pf benchmark`: parameters, FLOPs, Keras and LiteRT latency, file size and peak
memory side by side with keras.applications ResNet50 (`run`), the counters and timers
(`profile`), and the LiteRT timing child process (`litert_child`, run with
`python -m`). A new measurement goes into `run.benchmark_models` and its report."""
