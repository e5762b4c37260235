"""What the integrity check costs per load, next to the load itself (README figure).

    python tools/integrity_cost.py [MODEL ...]   (default: PFResNet50Max PFViTSmall)

For each model: its converted `.weights.h5` is written once; then, alternating, the
check alone (sha256 of the file, as a fresh process does it) and the whole
`load_keras_weights` (the strict layout check, Keras' load, and the check) are timed;
the medians are printed. The file is in the page cache, as on a second load.
"""

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(names):
    from keras_pf.models import resolve
    from keras_pf.weights import integrity, load_keras_weights

    for name in names:
        model = resolve.build(name, weights=None)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "w.weights.h5")
            model.save_weights(path)
            integrity.record(path)
            check, load = [], []
            for _ in range(5):
                integrity._verified.clear()  # as in a fresh process
                start = time.perf_counter()
                integrity.check_sidecar(path)
                check.append(time.perf_counter() - start)
                integrity._verified.clear()
                start = time.perf_counter()
                load_keras_weights(model, path)
                load.append(time.perf_counter() - start)
            c, lo = statistics.median(check), statistics.median(load)
            size = os.path.getsize(path) / 2 ** 20
            print(f"{name}: {size:.0f} MiB; check {c * 1000:.0f} ms, load with check "
                  f"{lo * 1000:.0f} ms: the check is {100 * c / lo:.0f}% of the load")


if __name__ == "__main__":
    main(sys.argv[1:] or ["PFResNet50Max", "PFViTSmall"])
