"""The checkpoint reader: every layout in the parity folder, and hostile or broken files."""

import argparse
import os
import pickle
import struct
import time
import zipfile

import numpy as np
import pytest

from keras_pf.weights.torch_reader import (CheckpointError, UnsafeCheckpointError,
                                           load_state_dict, read_checkpoint)

from conftest import DATA, PARITY_CASES
import reader_child
import torch_format


def test_layouts_in_the_wild():
    raw = load_state_dict(PARITY_CASES / "resnet_hybrid_64" / "checkpoint.pth")
    wrapped = read_checkpoint(PARITY_CASES / "resnet_hybrid_64_wrapped_module" / "checkpoint.pth")
    assert wrapped["arch"] == "resnet50_hybrid" and wrapped["epoch"] == 89
    assert wrapped["args"].model == "resnet50_hybrid"  # argparse.Namespace, rebuilt inertly
    unwrapped = load_state_dict(PARITY_CASES / "resnet_hybrid_64_wrapped_module" / "checkpoint.pth")
    assert list(unwrapped) == list(raw)  # `module.` prefixes stripped, order kept
    for key in raw:
        np.testing.assert_array_equal(unwrapped[key], raw[key])
    assert raw["conv1.1.num_batches_tracked"].dtype == np.int64
    half = load_state_dict(PARITY_CASES / "vit_max_64_wrapped_fp16" / "checkpoint.pth")
    full = load_state_dict(PARITY_CASES / "vit_max_64" / "checkpoint.pth")
    assert {v.dtype for v in half.values()} == {np.dtype("float16")}
    for key in full:
        np.testing.assert_allclose(half[key].astype(np.float32), full[key], rtol=1e-3, atol=1e-3)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_html_page_is_named_as_such(tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>")
    with pytest.raises(CheckpointError, match="HTML page"):
        read_checkpoint(path)


def test_truncated_file(tmp_path):
    data = (PARITY_CASES / "resnet_max_64" / "checkpoint.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_missing_storage(tmp_path):
    path = tmp_path / "partial.pth"
    torch_format.save({"a": np.ones((2, 3), np.float32)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist() if not n.endswith("data/0")}
    with zipfile.ZipFile(path, "w") as z:
        for name, content in entries.items():
            z.writestr(name, content)
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(path)


def test_non_contiguous_and_scalar_tensors_round_trip(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {"t": base.T, "scalar": np.array(5, np.int64), "half": base[:2].astype(np.float16)}
    path = torch_format.save(tensors, tmp_path / "t.pth")
    out = read_checkpoint(path)
    for key, value in tensors.items():
        assert out[key].shape == value.shape and out[key].dtype == value.dtype
        np.testing.assert_array_equal(out[key], value)


# --- hostile files: one regression test per attack class (issue 10) -----------------

def _read_in_child(path, max_elements=None):
    """`load_state_dict` in a memory- and time-limited child: its one output line."""
    result = reader_child.run(["read", path] + ([max_elements] if max_elements else []))
    assert result.returncode == 0, f"crashed ({result.returncode}): {result.stderr[-2000:]}"
    return result.stdout.strip()


def _raw(tmp_path, data, numel, offset, shape, stride, name="t.pth"):
    tensor = torch_format.Raw(data, numel, offset, shape, stride)
    return torch_format.save({"w": tensor}, tmp_path / name)


FOUR = np.arange(4, dtype=np.float32).tobytes()


@pytest.mark.parametrize("offset, shape, stride", [
    (0, (4,), (-1,)),  # reads the 3 elements before the storage
    (-2, (2,), (1,)),
    (3, (2,), (1,)),  # one past the end
    (0, (2, 2), (1, 3)),
])
def test_stride_or_offset_outside_the_storage_is_refused(tmp_path, offset, shape, stride):
    path = _raw(tmp_path, FOUR, 4, offset, shape, stride)
    with pytest.raises(CheckpointError, match="negative|outside its storage"):
        load_state_dict(path)


@pytest.mark.parametrize("offset, shape, stride", [
    (0, (2,), (-2 ** 40,)), (2 ** 62, (1,), (1,)), (0, (2, 2), (2 ** 62, -2 ** 62)),
    (0, (2 ** 63,), (1,)),
])
def test_values_that_crashed_the_interpreter_are_refused(tmp_path, offset, shape, stride):
    path = _raw(tmp_path, FOUR, 4, offset, shape, stride)
    out = _read_in_child(path)
    assert out.startswith("ERROR CheckpointError") and str(path) in out


def test_zero_stride_bomb_is_refused_before_allocating(tmp_path):
    path = _raw(tmp_path, FOUR, 4, 0, (2 ** 16, 2 ** 16), (0, 0))  # 600 bytes -> 16 GiB
    out = _read_in_child(path)
    assert "refused before allocating" in out, out
    with pytest.raises(CheckpointError, match="refused before allocating"):
        load_state_dict(_raw(tmp_path, FOUR, 4, 0, (1000, 4), (0, 1), "b.pth"), max_elements=3999)
    small = _raw(tmp_path, FOUR, 4, 0, (3, 4), (0, 1), name="small.pth")  # within the cap
    np.testing.assert_array_equal(load_state_dict(small)["w"], [[0, 1, 2, 3]] * 3)


def test_deflate_bomb_in_a_storage_is_refused_before_inflating(tmp_path):
    declared = torch_format.save({"w": torch_format.Raw(b"", 2 ** 24, 0, (2 ** 24,), (1,))},
                                 tmp_path / "declared.pth")  # 64 MiB of float32
    pickle_bytes = torch_format.read_archive(declared)["archive/data.pkl"]
    path = torch_format.deflate_bomb(tmp_path / "bomb.pth", pickle_bytes, "archive/data/0", 2 ** 26)
    assert path.stat().st_size < 2 ** 20
    start = time.monotonic()
    out = _read_in_child(path, max_elements=10 ** 6)  # what a small model can use
    assert "refused before reading" in out and time.monotonic() - start < 10, out
    # beyond the default cap: refused from the pickle's declaration alone
    huge = torch_format.save({"w": torch_format.Raw(b"", 2 ** 29, 0, (2 ** 29,), (1,))},
                             tmp_path / "huge.pth")
    with pytest.raises(CheckpointError, match="refused before reading"):
        load_state_dict(huge)


def test_without_a_budget_a_compressed_member_may_not_inflate_far_beyond_its_size(tmp_path):
    """The issue-22 probe: `fc.weight` 16384x16384 (within the default cap) from a 1 MB
    member of zeros that inflates to 1 GiB; with no model bounding it, the reader refuses
    it from the sizes alone, in a child whose memory could not hold the tensor."""
    declared = torch_format.save(
        {"fc.weight": torch_format.Raw(b"", 2 ** 28, 0, (2 ** 14, 2 ** 14), (2 ** 14, 1))},
        tmp_path / "declared.pth")
    pickle_bytes = torch_format.read_archive(declared)["archive/data.pkl"]
    path = torch_format.zero_bomb(tmp_path / "bomb.pth", pickle_bytes, "archive/data/0", 2 ** 30)
    assert path.stat().st_size < 1.1 * 2 ** 20
    start = time.monotonic()
    result = reader_child.run(["read", path], memory=768 * 2 ** 20)
    out = result.stdout.strip()
    assert result.returncode == 0 and "refused before inflating" in out, (out, result.stderr[-500:])
    assert str(path) in out and "archive/data/0" in out and time.monotonic() - start < 10
    # Genuine tensors deflated (as zip tools re-pack them) still read without a budget,
    # and a small compressible member fits the slack.
    state = {"w": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32),
             "b": np.zeros(2 ** 16, np.float32)}
    members = torch_format.read_archive(torch_format.save(state, tmp_path / "plain.pth"))
    packed = torch_format.write_archive(tmp_path / "deflated.pth", members, deflated=set(members))
    out = load_state_dict(packed)
    np.testing.assert_array_equal(out["w"], state["w"])
    np.testing.assert_array_equal(out["b"], state["b"])


def test_deflate_bomb_in_data_pkl_is_refused_before_inflating(tmp_path):
    path = torch_format.deflate_bomb(tmp_path / "bomb.pth", b"", "archive/data.pkl", 2 ** 25)
    start = time.monotonic()
    out = _read_in_child(path)
    assert "refused before inflating" in out and time.monotonic() - start < 10, out


def _pickle_checkpoint(tmp_path, payload, name="p.pth"):
    return torch_format.write_archive(tmp_path / name, {"archive/data.pkl": payload})


def _unicode(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


DEEP = 100_000


@pytest.mark.parametrize("payload", [
    b"\x80\x02}" + _unicode("w") + b")" + b"\x85" * DEEP + b"s.",  # {"w": ((((...))))}
    b"\x80\x02}" + b")" + b"\x85" * DEEP + b"Ns.",  # the deep tuple as a dict key
    b"\x80\x02}" + _unicode("w") + b"]" * DEEP + b"a" * (DEEP - 1) + b"s.",  # nested lists
])
def test_deep_nesting_is_refused(tmp_path, payload):
    out = _read_in_child(_pickle_checkpoint(tmp_path, payload))
    assert out.startswith("ERROR") and ("nests deeper" in out or "dict key" in out), out


def _laughs(levels=9, width=10):
    """A list of `width` references to a list of `width` references ... (width**levels)."""
    out = b"]q\x00"
    for level in range(1, levels + 1):
        out += b"](" + b"h" + bytes([level - 1]) + (b"h" + bytes([level - 1])) * (width - 1)
        out += b"eq" + bytes([level])
    return out


@pytest.mark.parametrize("payload", [
    b"\x80\x02}" + _unicode("w") + _laughs() + b"s.",
    b"\x80\x02" + _laughs() + b"Q.",  # as a persistent id, which went into an error's repr
    b"\x80\x02}" + _unicode("w") + b"]q\x00h\x00h\x00as.",  # a list containing itself
])
def test_shared_reference_bombs_are_refused_quickly(tmp_path, payload):
    assert len(payload) < 1024
    start = time.monotonic()
    out = _read_in_child(_pickle_checkpoint(tmp_path, payload))
    assert out.startswith("ERROR") and len(out) < 400 and time.monotonic() - start < 10, out


POISONS = {
    # BUILD with slot state: setattr on the allow-listed storage stand-in / Namespace class
    "storage dtype": b"\x80\x02ctorch\nFloatStorage\nN}" + _unicode("dtype") + _unicode("<f2")
    + b"s\x86b.",
    "Namespace class": b"\x80\x02cargparse\nNamespace\nN}" + _unicode("__init__") + b"Ns\x86b.",
    "OrderedDict class": b"\x80\x02ccollections\nOrderedDict\nN}" + _unicode("__setitem__")
    + b"Ns\x86b.",
}


def test_a_rejected_poison_changes_nothing_for_the_next_genuine_load(tmp_path, parity_case_resnet_hybrid):
    case = parity_case_resnet_hybrid
    for name, payload in POISONS.items():
        with pytest.raises(UnsafeCheckpointError, match="BUILD"):
            read_checkpoint(_pickle_checkpoint(tmp_path, payload, name.replace(" ", "_") + ".pth"))
    argparse.ArgumentParser().parse_args([])  # argparse still works
    from keras_pf.weights import load_torch_weights

    model = load_torch_weights(case.build(), case.checkpoint)
    np.testing.assert_allclose(model.predict(case.input_nhwc, verbose=0), case.logits,
                               rtol=0, atol=1e-4)


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


OPCODES = {
    "OBJ": b"\x80\x02(" + _global("collections", "OrderedDict") + b"o.",
    "INST": b"(icollections\nOrderedDict\n.",
    "NEWOBJ": b"\x80\x02" + _global("collections", "OrderedDict") + b")\x81.",
    "NEWOBJ_EX": b"\x80\x04" + _global("argparse", "Namespace") + b")}\x92.",
    "REDUCE": b"\x80\x02" + _global("torch", "FloatStorage") + b")R.",
    "EXT1": b"\x80\x02\x82\x01.",
    "EXT2": b"\x80\x02\x83\x01\x00.",
    "EXT4": b"\x80\x02\x84\x01\x00\x00\x00.",
    "NEXT_BUFFER": b"\x80\x05\x97.",
    "READONLY_BUFFER": b"\x80\x05N\x98.",
    "BINBYTES8": b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 40) + b"x.",
    "BYTEARRAY8": b"\x80\x05\x96" + struct.pack("<Q", 3) + b"abc.",
    "BINUNICODE8": b"\x80\x04\x8d" + struct.pack("<Q", 2 ** 40) + b"x.",
    "LONG4": b"\x80\x02\x8b" + struct.pack("<I", 2 ** 31) + b"x.",
    "PERSID": b"Pstorage\n.",
    "STRING": b"S'a'\n.",
    "EMPTY_SET": b"\x80\x04\x8f.",
    "BUILD": b"\x80\x02" + _global("torch", "FloatStorage") + b"}b.",
}


@pytest.mark.parametrize("opcode", list(OPCODES))
def test_every_opcode_outside_the_allow_list_is_refused_by_name(tmp_path, opcode):
    with pytest.raises(UnsafeCheckpointError, match=rf"\b{opcode}\b") as info:
        read_checkpoint(_pickle_checkpoint(tmp_path, OPCODES[opcode]))
    assert "\n" not in str(info.value)


def _stored_checkpoint(tmp_path):
    return torch_format.save({"w": np.arange(64, dtype=np.float32)}, tmp_path / "ok.pth")


def test_flipped_bit_is_a_crc_error(tmp_path):
    path = _stored_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.index(np.arange(64, dtype=np.float32).tobytes()) + 100
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC"):
        load_state_dict(path)


@pytest.mark.parametrize("flag_bits, method, message", [
    (0x1, None, "encrypted"), (None, 93, "zstd"), (None, 14, "lzma"), (None, 99, "AES")])
def test_encrypted_or_unsupported_compression_is_named(tmp_path, flag_bits, method, message):
    path = torch_format.patch_member_header(_stored_checkpoint(tmp_path), "archive/data/0",
                                            flag_bits=flag_bits, method=method)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict(path)


def test_duplicate_zip_members_are_refused(tmp_path):
    members = torch_format.read_archive(_stored_checkpoint(tmp_path))
    items = list(members.items()) + [("archive/data/0", np.zeros(64, np.float32).tobytes())]
    path = torch_format.write_archive(tmp_path / "dup.pth", items)
    with pytest.raises(CheckpointError, match="twice"):
        load_state_dict(path)


def test_duplicate_dict_keys_are_refused(tmp_path):
    path = torch_format.save({"a": np.zeros(2, np.float32), "b": np.ones(2, np.float32)},
                             tmp_path / "keys.pth")
    members = torch_format.read_archive(path)
    name = torch_format.pickle_name(members)
    members[name] = members[name].replace(_unicode("b"), _unicode("a"))
    torch_format.write_archive(path, members)
    with pytest.raises(CheckpointError, match="appears twice"):
        load_state_dict(path)


def test_genuine_float64_bfloat16_int32_non_contiguous_file_written_by_torch():
    """Written by torch 2.13: `torch.save({"model": sd, "meta_info": "...", "epoch": 3})`
    with sd = a transposed float32, float64, bfloat16, a float16 slice `[1:4, ::2]`
    (offset and step into a shared storage), int32, a 0-d int64, a Parameter and bool;
    the expected arrays by torch itself (`.numpy()`, bfloat16 via `.float()`)."""
    state = load_state_dict(DATA / "genuine_dtypes.pth")
    expected = np.load(DATA / "genuine_dtypes_expected.npz")
    assert list(state) == list(expected.files)
    for key in expected.files:
        assert state[key].dtype == expected[key].dtype and state[key].shape == expected[key].shape
        np.testing.assert_array_equal(state[key], expected[key])


def test_model_wrapper_with_metadata_beside_the_tensors(tmp_path):
    tensors = {"a": np.ones(3, np.float32), "b": np.zeros((2, 2), np.float16)}
    for layout in ({"model": {**tensors, "meta_info": "v1"}, "epoch": 3},
                   {"state_dict": {"module." + k: v for k, v in tensors.items()}, "best": 0.5},
                   {"state_dict_ema": tensors, "args": {"lr": 0.1}}):
        state = load_state_dict(torch_format.save(layout, tmp_path / "w.pth"))
        assert list(state) == list(tensors)


def test_integer_keys_are_named(tmp_path):
    path = torch_format.save({1: np.ones(2, np.float32), "b": np.ones(2, np.float32)},
                             tmp_path / "int.pth")
    with pytest.raises(CheckpointError, match="key 1 is not a parameter name"):
        load_state_dict(path)
    path = torch_format.save({"a\nb": np.ones(2, np.float32)}, tmp_path / "newline.pth")
    with pytest.raises(CheckpointError, match=r"key 'a\\nb' is not a parameter name"):
        load_state_dict(path)


# --- fuzzing: the contract under mutation of the parity checkpoints ------------------

def test_fuzzed_parity_checkpoints_keep_the_contract():
    """hypothesis mutates the pickle stream, its integers and the zip container; each
    file is read in a child limited in memory and time. KERAS_PF_FUZZ_EXAMPLES sets the
    examples per mutation kind (default 40; e.g. 5000 for a long run), KERAS_PF_FUZZ_SEED
    the seed."""
    examples = int(os.environ.get("KERAS_PF_FUZZ_EXAMPLES", 40))
    seed = int(os.environ.get("KERAS_PF_FUZZ_SEED", 0))
    result = reader_child.run(["fuzz", examples, seed], timeout=120 + examples * 3)
    assert result.returncode == 0, (
        f"fuzzing failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-8000:]}")


def test_any_stride_on_a_dimension_of_size_one(tmp_path):
    """Found by the fuzzer: a huge stride where it never steps overflowed numpy."""
    path = _raw(tmp_path, FOUR, 4, 1, (1, 3), (2 ** 61, 1))
    np.testing.assert_array_equal(load_state_dict(path)["w"], [[1, 2, 3]])


def test_full_size_checkpoint_peak_memory_and_a_hostile_one(tmp_path):
    """PF-ResNet50-max's full-size checkpoint (random tensors, original key list): read
    with at most ~1.2x its size in extra memory; the same file plus a zero-stride bomb
    within the default cap, refused with the model's budget and no growth."""
    import json

    from conftest import PARITY_KEYS

    keys = json.loads((PARITY_KEYS / "resnet50_max.json").read_text())["state_dict"]
    state = torch_format.random_state_dict(keys)
    weights = sum(v.nbytes for v in state.values())
    budget = sum(v.size for v in state.values()) + 2 ** 22  # as convert._element_budget
    path = torch_format.save(state, tmp_path / "r50max.pth")
    out = _read_in_child(path, budget)
    tensors, nbytes, grew = out.split()[1:]
    assert int(tensors) == len(state) and int(nbytes) == weights, out
    assert int(grew.split("=")[1]) < 1.2 * weights, (out, weights)
    state["bomb"] = torch_format.Raw(FOUR, 4, 0, (2 ** 14, 2 ** 13), (0, 0))  # 2**27 elements
    out = _read_in_child(torch_format.save(state, tmp_path / "bomb.pth"), budget)
    assert "refused before allocating" in out, out


def test_a_zip_of_many_members_is_refused_before_zipfile_lists_them(tmp_path):
    path = torch_format.write_archive(tmp_path / "many.pth", {"archive/data.pkl": b"\x80\x02}."})
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")  # end record: entries on this disk, entries in all
    struct.pack_into("<HH", data, end + 8, 60_001, 60_001)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="declares 60001 members"):
        load_state_dict(path)


def test_a_pickle_of_too_many_operations_is_refused(tmp_path):
    path = _pickle_checkpoint(tmp_path, b"\x80\x02" + b"N0" * 600_000 + b"}.")
    start = time.monotonic()
    with pytest.raises(UnsafeCheckpointError, match="more than 1000000 pickle operations"):
        load_state_dict(path)
    assert time.monotonic() - start < 10
