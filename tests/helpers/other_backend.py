"""Run a check on another Keras backend (JAX, PyTorch) in a child process: Keras' backend
is fixed per process and the test environment has neither framework installed.

The interpreter is $KERAS_PF_<BACKEND>_PYTHON (one with that framework, keras and
keras_pf's dependencies), else this one if it has the framework; otherwise the test is
skipped, saying which variable to set."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_on_backend(backend, code, timeout=300):
    """Run `code` (Python source) with KERAS_BACKEND=`backend`; returns its stdout and
    fails the test with its stderr if it exits non-zero."""
    variable = f"KERAS_PF_{backend.upper()}_PYTHON"
    python = os.environ.get(variable)
    if not python:
        if importlib.util.find_spec(backend) is None:
            pytest.skip(f"no {backend} here: set {variable} to an interpreter that has it")
        python = sys.executable
    helpers = os.path.dirname(os.path.abspath(__file__))  # max_pool_cases, ...
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join([ROOT, helpers]))
    result = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
