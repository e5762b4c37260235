"""Fuzzing the checkpoint reader with hypothesis: the pickle stream, its integers
(shapes, strides, offsets, element counts) and the zip container of the parity
checkpoints are mutated, and every result must honour the reader's contract: the
tensors, or one `CheckpointError` line, within the time limit (the memory limit is
set by the parent, `reader_child.run`). Run through `test_torch_reader.py`."""

import faulthandler
import io
import pathlib
import pickletools
import tempfile
import time
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, seed, settings, strategies as st

import torch_format

CASES = pathlib.Path(__file__).resolve().parents[1] / "data" / "parity_cases"
CHECKPOINTS = ["resnet_hybrid_64_wrapped_module", "vit_max_64_wrapped_fp16", "pit_max_64",
               "resnet_max_64"]
SECONDS = 5  # per file; the child's watchdog (faulthandler) kills a hang at 10


class Original:
    def __init__(self, name):
        self.name, self.path = name, CASES / name / "checkpoint.pth"
        self.raw = self.path.read_bytes()
        self.members = torch_format.read_archive(self.path)
        self.pickle_name = torch_format.pickle_name(self.members)
        self.pickle = self.members[self.pickle_name]
        self.ints = [(pos, op.name) for op, _, pos in pickletools.genops(self.pickle)
                     if op.name in ("BININT", "BININT1", "BININT2")]
        self.headers = [i for i in range(len(self.raw) - 3)
                        if self.raw[i:i + 2] == b"PK" and self.raw[i + 2] in (1, 3, 5)]


    def __repr__(self):
        return self.name


def _long1(value):
    data = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


_WIDTH = {"BININT": 5, "BININT1": 2, "BININT2": 3}

byte_edits = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]),
                                st.floats(0, 1, exclude_max=True), st.integers(0, 255),
                                st.integers(1, 64)), min_size=1, max_size=6)
extreme_ints = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.sampled_from(
    [0, -1, 1, 2 ** 31 - 1, -2 ** 31, 2 ** 32, 2 ** 62, -2 ** 63, 2 ** 63 - 1, 2 ** 64]))


def edit_bytes(data, edits):
    data = bytearray(data)
    for kind, where, value, length in edits:
        if not data:
            break
        at = int(where * len(data))
        if kind == "flip":
            data[at] ^= 1 << (value % 8)
        elif kind == "set":
            data[at] = value
        elif kind == "insert":
            data[at:at] = bytes([value]) * length
        else:
            del data[at:at + length]
    return bytes(data)


def rewrite_ints(original, choices):
    """Replace some integer opcodes of the pickle with LONG1 integers of any size."""
    data = original.pickle
    for index, value in sorted(choices, key=lambda c: -original.ints[c[0] % len(original.ints)][0]):
        pos, name = original.ints[index % len(original.ints)]
        data = data[:pos] + _long1(value) + data[pos + _WIDTH[name]:]
    return data


def check(reader, original, blob, budget):
    with tempfile.NamedTemporaryFile(suffix=".pth") as f:
        f.write(blob)
        f.flush()
        start = time.monotonic()
        try:
            state = reader.load_state_dict(f.name, max_elements=budget)
        except reader.CheckpointError as error:
            message = str(error)
            assert "\n" not in message and len(message) < 1000, message[:2000]
            assert f.name in message, message
        else:
            assert isinstance(state, dict) and state
            assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items())
            assert sum(v.size for v in state.values()) <= budget
        elapsed = time.monotonic() - start
        assert elapsed < SECONDS, f"{elapsed:.1f} s"


def main(reader, examples, seed_value):
    faulthandler.dump_traceback_later(60 + examples * 2, exit=True)  # the whole run
    originals = [Original(name) for name in CHECKPOINTS]
    budgets = {}
    for original in originals:  # the unmutated files read exactly
        state = reader.load_state_dict(original.path)
        budgets[original.path] = 2 * sum(v.size for v in state.values())
    pick = st.sampled_from(originals)
    options = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                       suppress_health_check=list(HealthCheck), print_blob=True)

    @seed(seed_value)
    @options
    @given(pick, byte_edits)
    def pickle_stream(original, edits):
        members = dict(original.members)
        members[original.pickle_name] = edit_bytes(original.pickle, edits)
        check(reader, original, _zip(members), budgets[original.path])

    @seed(seed_value)
    @options
    @given(pick, st.lists(st.tuples(st.integers(0, 10 ** 6), extreme_ints), min_size=1, max_size=4))
    def pickle_integers(original, choices):
        members = dict(original.members)
        members[original.pickle_name] = rewrite_ints(original, choices)
        check(reader, original, _zip(members), budgets[original.path])

    @seed(seed_value)
    @options
    @given(pick, byte_edits, st.booleans(), st.integers(0, 10 ** 6))
    def container(original, edits, near_header, header):
        raw = original.raw
        if near_header:  # aim at the zip headers: sizes, offsets, flags, methods, CRCs
            at = original.headers[header % len(original.headers)]
            window = raw[at:at + 64]
            raw = raw[:at] + edit_bytes(window, edits) + raw[at + 64:]
        else:
            raw = edit_bytes(raw, edits)
        check(reader, original, raw, budgets[original.path])

    for test in (pickle_stream, pickle_integers, container):
        start = time.monotonic()
        test()
        print(f"{test.__name__}: {examples} examples in {time.monotonic() - start:.1f} s", flush=True)


def _zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


