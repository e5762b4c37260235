"""How much a download may bring and how slowly, from what is being loaded.

- Size: the registry's recorded size of the file when it has one; else
  `$KERAS_PF_DOWNLOAD_MAX_BYTES` if set; else, when the model is known,
  `BYTES_PER_PARAMETER` (32: eight float32 copies) per parameter plus `CAP_SLACK`
  (16 MiB). An original training checkpoint holds the weights, an EMA copy and Adam's
  two moments (4 copies) at most; eight leave room for float64 or an extra copy. Only
  without a model, the flat `DEFAULT_MAX_BYTES` (1.5 GiB) applies.
- Speed: after a grace period (`$KERAS_PF_DOWNLOAD_RATE_GRACE`, default 60 s), the
  average rate since the start must stay at least `$KERAS_PF_DOWNLOAD_MIN_RATE` bytes
  per second (default 32 KiB/s; a 300 MB checkpoint would need over 2.5 h below it). A
  server that trickles a byte now and then never trips the stall timeout; this ends
  it, and the download's cache lock is released with the error. Both can also be given
  as arguments (`min_rate=`, `rate_grace=`) to `download_url` / `download_source`.
"""

import os

MAX_BYTES_ENV = "KERAS_PF_DOWNLOAD_MAX_BYTES"
MIN_RATE_ENV = "KERAS_PF_DOWNLOAD_MIN_RATE"
RATE_GRACE_ENV = "KERAS_PF_DOWNLOAD_RATE_GRACE"
# The largest original checkpoint (ViT-B, 94 M parameters, with optimizer state) fits.
DEFAULT_MAX_BYTES = 3 << 29
BYTES_PER_PARAMETER = 32
CAP_SLACK = 16 << 20
DEFAULT_MIN_RATE = 32 * 1024.0
DEFAULT_RATE_GRACE = 60.0


def env_number(name, default):
    """A positive finite number from `$name`, else `default`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"${name} must be a positive number; it is {text!r}")
    return value


def size_cap(recorded_size=None, params=None):
    """`(bytes, why)`: the most a download may bring, and where that figure comes from."""
    if recorded_size:
        return int(recorded_size), "the registry's recorded size"
    if os.environ.get(MAX_BYTES_ENV, "").strip():
        return int(env_number(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)), f"${MAX_BYTES_ENV}"
    if params:
        return (BYTES_PER_PARAMETER * int(params) + CAP_SLACK,
                f"8 float32 copies of the model's {int(params)} parameters plus 16 MiB; "
                f"${MAX_BYTES_ENV} overrides it")
    return DEFAULT_MAX_BYTES, f"the default cap without a model; ${MAX_BYTES_ENV} overrides it"


class RateFloor:
    """The minimum average rate of one download; `check` raises once it is not met."""

    def __init__(self, what, min_rate=None, grace=None):
        self.what = what
        self.min_rate = float(min_rate) if min_rate else env_number(MIN_RATE_ENV, DEFAULT_MIN_RATE)
        self.grace = float(grace) if grace else env_number(RATE_GRACE_ENV, DEFAULT_RATE_GRACE)

    def problem(self, received, elapsed):
        """The error message if `received` bytes after `elapsed` s are too few, else None."""
        if elapsed <= self.grace or received >= self.min_rate * elapsed:
            return None
        return (f"{self.what}: {received} bytes in {elapsed:.0f} s, an average of "
                f"{received / elapsed:.0f} B/s, below the minimum {self.min_rate:g} B/s "
                f"(${MIN_RATE_ENV}, checked after ${RATE_GRACE_ENV} = {self.grace:g} s); the "
                "download was stopped and its cache lock released: try again later, or "
                f"lower ${MIN_RATE_ENV} on a slow network")
