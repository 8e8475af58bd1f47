"""Reading every committed fixture as torch and Python's safetensors do: every tensor
bit-identical, every scalar equal, in torch or numpy, whole, by rows, or streamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    FIXTURES,
    expected,
    has_torch,
    leaf_equal,
    needs_torch,
    same_as_torch,
    sha256,
    tensor_bytes,
)

import ckptio

TORCH = expected("torch/expected.json")
HF = expected("hf/expected.json")
TORCH_FIXTURES = sorted(k for k, v in TORCH.items() if isinstance(v, dict))


@needs_torch
@pytest.mark.parametrize("name", TORCH_FIXTURES)
def test_every_torch_fixture_loads_as_torch_shows_it(name: str) -> None:
    checkpoint = ckptio.open(str(FIXTURES / "torch" / name), framework="pt")
    tree = checkpoint.tree()
    readable = [p for p in checkpoint.keys() if checkpoint._inner.tensor_ref(p).unreadable is None]
    tensors = checkpoint.read(readable)
    for path, want in TORCH[name].items():
        if "sha256" in want:
            got = tensors[path]
            assert str(got.dtype).removeprefix("torch.") != "", path
            assert list(got.shape) == want["shape"], path
            assert sha256(tensor_bytes(got)) == want["sha256"], f"{name}: {path}"
        elif "value" in want:
            node: Any = tree
            for segment in path.split("/"):
                key = segment.replace("%2F", "/").replace("%25", "%")
                if isinstance(node, (list, tuple)) or (isinstance(node, dict) and key not in node):
                    node = node[int(key)]  # an index, or an integer key
                else:
                    node = node[key]
            assert leaf_equal(node, want["value"]), f"{name}: {path}: {node!r}"


@needs_torch
@pytest.mark.parametrize("name", ["state_dict.pt", "views.pt", "signs.pt"])
def test_load_matches_torch_load(name: str) -> None:
    import torch

    path = FIXTURES / "torch" / name
    ours = ckptio.load(str(path))
    theirs = torch.load(path, weights_only=True)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        assert tensor_bytes(ours[key]) == tensor_bytes(value), key


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_safe_open_reads_what_pythons_safetensors_reads(framework: str) -> None:
    if framework == "pt" and not has_torch():
        pytest.skip("torch is not installed")
    from safetensors import safe_open

    path = str(FIXTURES / "dtypes.safetensors")
    with (
        safe_open(path, framework=framework) as theirs,
        ckptio.safe_open(path, framework=framework) as ours,
    ):
        assert ours.keys() == theirs.keys()
        assert ours.offset_keys() == theirs.offset_keys()
        assert ours.metadata() == theirs.metadata()
        for key in theirs.keys():
            try:
                want = theirs.get_tensor(key)
            except (TypeError, ValueError, AttributeError):
                continue  # Python's safetensors cannot make it here (BF16 in numpy, F4 in torch)
            dtype = ours.get_slice(key).get_dtype()
            try:
                got = ours.get_tensor(key)
            except ckptio.UnsupportedError:
                # Packed sub-byte floats have no element type; FP8 in numpy needs ml_dtypes.
                assert dtype in ("F4", "F6_E2M3", "F6_E3M2") or framework == "np", key
                continue
            assert tuple(got.shape) == tuple(want.shape), key
            assert tensor_bytes(got) == tensor_bytes(want), key


def test_a_slice_of_three_dimensions_indexes_as_safetensors_does(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = str(tmp_path / "cube.safetensors")
    save_file({"cube": np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)}, path)
    indices: list[Any] = [
        (Ellipsis, -1),
        (Ellipsis, slice(1, 3)),
        (1, Ellipsis, 2),
        (slice(1, 3), Ellipsis),
        (slice(None), 1),
        (-1, slice(2, 5)),
        (slice(1, 3), slice(None), slice(0, 6, 2)),
        (slice(None, None, 2),),
        (0, 0, 0),
    ]
    with safe_open(path, framework="np") as theirs, ckptio.safe_open(path, framework="np") as ours:
        for index in indices:
            got, want = ours.get_slice("cube")[index], theirs.get_slice("cube")[index]
            assert got.shape == want.shape and np.array_equal(got, want), index


def test_a_slice_reads_rows_as_safetensors_slices_them() -> None:
    from safetensors import safe_open

    path = str(FIXTURES / "hf" / "model" / "model.safetensors")
    name = "transformer.wte.weight"
    with safe_open(path, framework="np") as theirs, ckptio.safe_open(path, framework="np") as ours:
        for index in [slice(1, 5), slice(None, 3), 7]:
            got = ours.get_slice(name)[index]
            want = theirs.get_slice(name)[index]
            assert np.array_equal(got, want), index
            assert type(got) is type(want) and got.shape == want.shape, index
        assert ours.get_slice(name).get_shape() == theirs.get_slice(name).get_shape()
        bias = "transformer.h.0.attn.c_attn.bias"  # one element of a 1-d tensor: a 0-d array
        got, want = ours.get_slice(bias)[3], theirs.get_slice(bias)[3]
        assert type(got) is type(want) and got.shape == want.shape == () and got == want
        whole = ours.get_tensor(name)
        # Negative bounds and further dimensions, which Python's safetensors does not take.
        assert np.array_equal(ours.get_slice(name)[-4:], whole[-4:])
        assert np.array_equal(ours.get_slice(name)[2:4, 1:3], whole[2:4, 1:3])


@pytest.mark.parametrize("layout", ["model", "variant", "bin", "bin_variant", "bin_single"])
def test_hugging_face_layouts_read_bit_for_bit(layout: str) -> None:
    checkpoint = ckptio.open(str(FIXTURES / "hf" / layout), framework="np")
    tensors = checkpoint.read()
    for path, want in HF[layout].items():
        assert sha256(tensor_bytes(tensors[path])) == want["sha256"], path


def test_a_dcp_tensor_reads_by_rows_from_the_chunks_that_hold_them() -> None:
    checkpoint = ckptio.open(str(FIXTURES / "torch" / "dcp_sharded"), framework="np")
    whole = checkpoint.get_tensor("model/w")
    assert np.array_equal(checkpoint.get_rows("model/w", 3, 6), whole[3:6])


@pytest.mark.parametrize("start, stop", [(-3, None), (2, 10_000), (-100, 2), (5, 2), (0, None)])
def test_rows_and_bytes_take_bounds_as_python_slices_do(start: int, stop: int | None) -> None:
    checkpoint = ckptio.open(str(FIXTURES / "torch" / "dcp_sharded"), framework="np")
    whole = checkpoint.get_tensor("model/w")
    assert np.array_equal(checkpoint.get_rows("model/w", start, stop), whole[start:stop])
    plain = ckptio.open(str(FIXTURES / "tiny.safetensors"), framework="np")
    raw = plain.get_tensor("embed.weight").tobytes()
    assert bytes(plain.get_bytes("embed.weight", start, stop)) == raw[start:stop]


def test_rows_of_a_scalar_are_refused_by_name() -> None:
    checkpoint = ckptio.open(str(FIXTURES / "torch" / "state_dict.pt"), framework="np")
    with pytest.raises(ValueError, match=r"state_dict.pt: rows 0..1 of `steps` \(\[\]\): a scalar"):
        checkpoint.get_rows("steps", 0, 1)


def test_stream_yields_every_tensor_once_in_file_order() -> None:
    path = str(FIXTURES / "hf" / "bin")
    streamed = dict(ckptio.stream(path, framework="np"))
    assert set(streamed) == set(HF["bin"])
    for key, want in HF["bin"].items():
        assert sha256(tensor_bytes(streamed[key])) == want["sha256"], key


def test_select_and_ignore_keep_what_their_globs_say() -> None:
    path = str(FIXTURES / "torch" / "training_state.pt")
    selected = ckptio.open(path, select=["model/*"])
    assert selected.keys() and all(k.startswith("model/") for k in selected.keys())
    ignored = ckptio.open(path, ignore=["optimizer"])
    assert not any(k.startswith("optimizer/") for k in ignored.keys())
    # A select glob that matches nothing is a typo to report, not an empty checkpoint; an
    # ignore glob that matches nothing ignores nothing, as Composer's ignore_keys do.
    refused = r"training_state.pt: select `model\.\*` matches nothing; its top level"
    with pytest.raises(ValueError, match=refused):
        ckptio.load(path, select=["model/*", "model.*"])
    assert ckptio.open(path, ignore=["nothing/*"]).keys() == ckptio.open(path).keys()


def test_info_and_bytes_need_no_tensor_read() -> None:
    checkpoint = ckptio.open(str(FIXTURES / "tiny.safetensors"))
    info = checkpoint.info("embed.weight")
    assert info.dtype == "F32"
    raw = checkpoint.get_bytes("embed.weight", 0, 8)
    whole = checkpoint.get_tensor("embed.weight", framework="np")
    assert bytes(raw) == whole.tobytes()[:8]


def test_read_tensors_are_writable_and_independent() -> None:
    checkpoint = ckptio.open(str(FIXTURES / "tiny.safetensors"), framework="np")
    first = checkpoint.get_tensor("embed.weight")
    second = checkpoint.get_tensor("embed.weight")
    first[...] = 0
    assert np.any(second != 0)


@needs_torch
def test_bf16_and_fp8_come_back_as_torchs_own_dtypes() -> None:
    import torch

    checkpoint = ckptio.open(str(FIXTURES / "dtypes.safetensors"), framework="pt")
    dtypes = {
        checkpoint.info(k).dtype: checkpoint.get_tensor(k).dtype
        for k in checkpoint.keys()
        if checkpoint.info(k).dtype in ("BF16", "F8_E4M3", "F8_E5M2")
    }
    assert dtypes.get("BF16") == torch.bfloat16
    assert dtypes.get("F8_E4M3") == torch.float8_e4m3fn


def test_numpy_bf16_needs_ml_dtypes_and_says_so() -> None:
    checkpoint = ckptio.open(str(FIXTURES / "dtypes.safetensors"), framework="np")
    bf16 = next(k for k in checkpoint.keys() if checkpoint.info(k).dtype == "BF16")
    try:
        import ml_dtypes
    except ImportError:
        with pytest.raises(ckptio.UnsupportedError, match="ml_dtypes"):
            checkpoint.get_tensor(bf16)
        return
    assert checkpoint.get_tensor(bf16).dtype == ml_dtypes.bfloat16


def test_without_torch_the_default_is_numpy() -> None:
    loaded = ckptio.load(str(FIXTURES / "tiny.safetensors"))
    first = next(iter(loaded.values()))
    if has_torch():
        import torch

        assert isinstance(first, torch.Tensor)
    else:
        assert isinstance(first, np.ndarray)


@pytest.mark.parametrize(("mmap", "huge_pages"), [(True, False), (False, False), (False, True)])
def test_a_large_tensor_read_is_writable_and_writes_never_reach_the_file(
    tmp_path: Any, mmap: bool, huge_pages: bool
) -> None:
    # 40 MiB: past the size where fetched spans get a mapping of their own.
    big = np.arange(10 << 20, dtype=np.float32).reshape(1 << 10, -1)
    path = tmp_path / "big.safetensors"
    ckptio.save(str(path), {"big": big, "small": np.ones(3, np.float32)}, format="safetensors")
    before = sha256(path.read_bytes())
    checkpoint = ckptio.open(str(path), framework="np", mmap=mmap, huge_pages=huge_pages)
    got = checkpoint.get_tensor("big")
    again = checkpoint.get_tensor("big")
    got[...] = -1
    assert np.all(got == -1)
    assert np.array_equal(again, big)
    assert sha256(path.read_bytes()) == before
    loaded = ckptio.load(str(path), framework="np", mmap=mmap, huge_pages=huge_pages)
    assert np.array_equal(loaded["big"], big)


@needs_torch
@pytest.mark.parametrize("name", ["lightning.ckpt", "fabric.ckpt", "state_dict.pt"])
def test_load_gives_what_torch_load_gives_tuples_and_integer_keys_included(name: str) -> None:
    import torch

    path = FIXTURES / "torch" / name
    same_as_torch(ckptio.load(str(path)), torch.load(path, weights_only=True))


def test_tuples_and_integer_keys_survive_a_ckptio_save(tmp_path: Any) -> None:
    state = {
        "optimizer": {"state": {0: {"step": np.ones(1)}, 3: {"step": np.zeros(1)}}},
        "betas": (0.9, 0.999),
        "params": [0, 3],
    }
    ckptio.save(str(tmp_path / "ckpt"), state)
    back = ckptio.load(str(tmp_path / "ckpt"), framework="np")
    assert list(back["optimizer"]["state"]) == [0, 3]
    assert back["betas"] == (0.9, 0.999)
    assert back["params"] == [0, 3]


def test_an_orbax_checkpoint_reads_without_jax_or_tensorstore() -> None:
    want = expected("orbax/expected.json")["standard"]
    # Without ml_dtypes, numpy has no bfloat16: the one BF16 array is left out.
    bf16 = [p for p, w in want.items() if w.get("dtype") == "BF16"]
    ignore = None if _has_ml_dtypes() else bf16
    state = ckptio.load(str(FIXTURES / "orbax" / "standard"), framework="np", ignore=ignore)
    assert state["step"] == 7
    for path, w in want.items():
        if "sha256" not in w or (ignore and path in ignore):
            continue
        node: Any = state
        for key in path.split("/"):
            node = node[int(key)] if isinstance(node, list) else node[key]
        assert list(node.shape) == w["shape"], path
        assert sha256(tensor_bytes(node)) == w["sha256"], path


def _has_ml_dtypes() -> bool:
    import importlib.util

    return importlib.util.find_spec("ml_dtypes") is not None


def test_a_plain_pickle_of_numpy_arrays_loads_as_pickle_does() -> None:
    import pickle

    path = FIXTURES / "torch" / "plain.pkl"
    with open(path, "rb") as f:
        theirs = pickle.load(f)
    ours = ckptio.load(str(path), framework="np")
    assert np.array_equal(ours["w"], theirs["w"]) and ours["w"].dtype == theirs["w"].dtype
    assert np.array_equal(ours["ids"], theirs["ids"])
    assert (ours["step"], ours["name"]) == (theirs["step"], theirs["name"])
    assert ours["nested"][0] == 1.5 and list(ours["nested"][1]) == [2, 3]


@pytest.mark.parametrize("name", ["torch/state_dict.pt", "torch/views.pt", "tiny.safetensors"])
def test_a_checkpoint_in_memory_reads_as_it_does_from_its_file(name: str) -> None:
    # Raw reads (dtype name, shape, bytes): BF16 needs no ml_dtypes to be compared.
    def raw(checkpoint: ckptio.Checkpoint) -> dict[str, Any]:
        return {
            p: (dtype, shape, np.asarray(buffer).tobytes())
            for p, (dtype, shape, buffer) in checkpoint._inner.read()
        }

    path = str(FIXTURES / name)
    want = raw(ckptio.open(path))
    for data in (
        (FIXTURES / name).read_bytes(),
        bytearray((FIXTURES / name).read_bytes()),
        ckptio._ckptio.get(path),
    ):
        assert raw(ckptio.open_bytes(data, name)) == want, f"{name}: {type(data).__name__}"


def test_a_checkpoint_in_a_buffer_reads_as_views_of_it_and_bytes_as_copies() -> None:
    raw = (FIXTURES / "tiny.safetensors").read_bytes()
    buffer = ckptio._ckptio.get(str(FIXTURES / "tiny.safetensors"))
    name = ckptio.open_bytes(raw, framework="np").keys()[0]
    view = ckptio.open_bytes(buffer, framework="np").get_tensor(name)
    view.reshape(-1).view(np.uint8)[0] ^= 0xFF
    assert np.asarray(buffer).tobytes() != raw  # the tensor was a view of the buffer
    # From bytes, each read is a copy of its own: writing one leaves the next read as stored.
    from_bytes = ckptio.open_bytes(raw, framework="np")
    copy = from_bytes.get_tensor(name)
    copy.reshape(-1).view(np.uint8)[0] ^= 0xFF
    assert from_bytes.get_tensor(name).tobytes() != copy.tobytes()


def test_bytes_in_memory_that_are_not_a_checkpoint_get_the_right_exception() -> None:
    raw = (FIXTURES / "torch" / "state_dict.pt").read_bytes()
    with pytest.raises(ckptio.CorruptError, match=r"item\.pt"):
        ckptio.open_bytes(raw[:-10], "item.pt")
    with pytest.raises(ckptio.UnsafeError, match=r"posix\.system"):
        ckptio.open_bytes((FIXTURES / "torch" / "hostile.pt").read_bytes(), "hostile.pt")
    with pytest.raises(ckptio.UnsupportedError, match=r"legacy\.pt"):
        ckptio.open_bytes((FIXTURES / "torch" / "legacy.pt").read_bytes(), "legacy.pt")
    with pytest.raises(TypeError, match="Buffer or bytes"):
        ckptio._ckptio.open_bytes("not bytes", "x")  # type: ignore[arg-type]
