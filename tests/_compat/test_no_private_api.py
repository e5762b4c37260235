"""No private TensorFlow/Keras/keras-hub API outside keras_pf/_compat: an upgrade must break one
file and one test, not ten modules."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# imports of private packages, and the private members the compatibility modules wrap
PRIVATE = re.compile(
    r"(tensorflow\.python|tensorflow\.lite\.python|tensorflow\.lite\.tools|tensorflow\.compiler|"
    r"keras\.src|keras_hub\.src|jax\._src|\._get_ops_details|\._experimental_|\._inbound_nodes|\._outbound_nodes|"
    r"\._keras_history|\._run_through_graph|\._nodes_by_depth|\._flatten_layers|"
    r"\._symbolic_build|\._maybe_symbolic_build|\._build_from_signature|\._compute_attention|"
    r"\._(query|key|value|output)_dense)\b")


def _sources():
    for package in ("keras_pf", "keras_pf_cli", "tools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_compat" not in path.parts and path.name != "metadata_schema_py_generated.py":
                yield path


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_api_outside_compat(path):
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if PRIVATE.search(line) and not line.lstrip().startswith("#")]
    assert not hits, "private TensorFlow/Keras API outside keras_pf/_compat:\n" + "\n".join(hits)


def test_the_check_finds_a_private_use():
    assert PRIVATE.search("x = layer._inbound_nodes[0]")
    assert PRIVATE.search("from tensorflow.python.eager import context")
    assert PRIVATE.search("from keras_hub.src.utils import preset_utils")
    assert PRIVATE.search("from jax._src.interpreters import ad")
    assert not PRIVATE.search("from tensorflow.lite import Interpreter")
