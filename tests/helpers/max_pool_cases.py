"""The max-pool configurations every FastMaxPooling2D check covers (no imports, so the
child processes on the JAX and PyTorch backends can use it too)."""

# (pool_size, strides, padding): the networks' two (3/1 same, 3/2 valid) and others
CONFIGS = [(3, 1, "same"), (3, 2, "valid"), (3, 2, "same"), (2, 2, "valid"), (2, 1, "same"),
           (4, 3, "same"), ((3, 2), (1, 2), "valid")]
