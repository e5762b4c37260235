"""The package's shape: no import circle, one model resolver, `import keras_pf` the same
however the process started, and the command line's help in step with the library."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """keras_pf modules `path` imports, at any depth (function-level imports too: a
    circle dodged by importing inside a function is still a circle)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _graph():
    modules = {_module_name(p): p for p in (ROOT / "keras_pf").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # an import of a package means its __init__; of a name in a module, the module
        graph[name] = {m for m in _imports(path) if m in modules and m != name
                       and m != "keras_pf" and not name.startswith(m + ".")}
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_modules():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_weights_registry_is_a_leaf():
    keras_pf_imports = {m for m in _imports(ROOT / "keras_pf/weights/registry.py") if m.startswith("keras_pf")}
    assert keras_pf_imports <= {"keras_pf.files", "keras_pf.files.write_atomic"}


HUB_MISSING = 'keras_pf.hub needs keras-hub, which is not installed: pip install "keras_pf[hub]"'


def test_import_keras_pf_does_not_read_the_command_line_nor_need_keras_hub():
    source = (ROOT / "keras_pf/__init__.py").read_text()
    assert "sys.argv" not in source
    # started as the command would start it, the layers are registered all the same;
    # keras-hub (an optional extra) blocked as if not installed: keras_pf imports, and
    # keras_pf.hub is one line naming the extra (one interpreter for both, for time)
    code = ("import sys; sys.argv = ['keras-pf']; sys.modules['keras_hub'] = None\n"
            "import keras_pf, keras\n"
            "print(keras.saving.get_registered_object('keras_pf>PositionEmbedding') is not None)\n"
            "try:\n    import keras_pf.hub\nexcept ImportError as error:\n    print(error)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert out.stdout.strip().splitlines() == ["True", HUB_MISSING], out.stderr[-2000:]


def test_only_keras_pf_hub_imports_keras_hub():
    """The static half of the check above, for every module (function-level imports
    too): keras-hub and keras_pf.hub are imported by keras_pf.hub, its private-API
    wrapper keras_pf/_compat/keras_hub.py, the hub-preset command, and the export of a
    saved keras-hub segmenter or detector (keras_pf.mobile.tasks and the export command,
    inside functions) only."""
    allowed = ("keras_pf.hub", "keras_pf._compat.keras_hub", "keras_pf_cli.hub_preset",
               "keras_pf_cli.export", "keras_pf.mobile.tasks")
    offenders = []
    for path in sorted([*(ROOT / "keras_pf").rglob("*.py"), *(ROOT / "keras_pf_cli").rglob("*.py")]):
        name = _module_name(path)
        if name == allowed[0] or name.startswith(allowed[0] + ".") or name in allowed:
            continue
        hits = {m for m in _imports(path) if m.split(".")[0] == "keras_hub" or m == "keras_pf.hub"
                or m.startswith("keras_pf.hub.")}
        if hits:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(hits)}")
    assert not offenders, offenders


def test_one_model_resolver():
    """Turning a name into a model happens in keras_pf/models/resolve.py only."""
    offenders = []
    for path in sorted([*(ROOT / "keras_pf").rglob("*.py"), *(ROOT / "keras_pf_cli").rglob("*.py"),
                        *(ROOT / "tools").rglob("*.py")]):
        text = path.read_text()
        if path.name == "resolve.py":
            continue
        for needle in ("MODELS[", "GENERIC_BUILDERS =", "getattr(keras_pf,", "getattr(keras.applications",
                       "keras.saving.load_model(", "Unknown model"):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders


@pytest.mark.parametrize("command, option, vocabulary", [
    ("export", "--precision", ("keras_pf.mobile.export", "PRECISIONS")),
    ("finetune", "--export", ("keras_pf.mobile.export", "PRECISIONS")),
    ("finetune", "--strategy", ("keras_pf.training.finetune", "STRATEGIES")),
    ("benchmark", "--precisions", ("keras_pf.mobile.export", "PRECISIONS")),
    ("benchmark", "--keras-modes", ("keras_pf.benchmark.run", "KERAS_MODES")),
])
def test_help_lists_the_library_vocabulary(capsys, command, option, vocabulary):
    """The CLI parses without importing the library, so its help names the values in
    words; they must be the library's."""
    import importlib

    from keras_pf_cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = text[text.index("options:"):]
    help_of_option = options[options.index(option):]
    values = getattr(importlib.import_module(vocabulary[0]), vocabulary[1])
    missing = [v for v in values if v not in help_of_option[:400]]
    assert not missing, f"{command} {option} help does not name {missing}"
    with pytest.raises(SystemExit) as exit_info:
        main([command, *(["X"] if command == "export" else ["X", "Y"] if command == "finetune" else []),
              option, "no-such-value", *(["-o", "x.tflite"] if command == "export" else [])])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-value'" in capsys.readouterr().err
