"""Without keras-hub, `import keras_pf.hub` is one ImportError line saying what to
install; keras_pf itself does not need it. (Runs whether keras-hub is installed or not.)"""

from hub_helpers import run_python

SCRIPT = """
import sys
sys.modules["keras_hub"] = None  # as if keras-hub were not installed
import keras_pf
try:
    import keras_pf.hub
except ImportError as error:
    print("ERROR:", error)
print("keras_pf ok:", keras_pf.__version__)
"""


def test_without_keras_hub_the_import_error_says_what_to_install():
    result = run_python(SCRIPT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == 'ERROR: keras_pf.hub needs keras-hub, which is not installed: pip install "keras_pf[hub]"'
    assert lines[1].startswith("keras_pf ok:")
