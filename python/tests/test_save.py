"""Saving from torch and numpy: zero-copy views of the caller's memory, streamed into a ckptio
checkpoint (committed atomically) or safetensors that Python's safetensors reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, needs_torch, same_as_torch

import ckptio


def test_numpy_state_round_trips_through_a_ckptio_checkpoint(tmp_path: Path) -> None:
    state = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "t": np.arange(6, dtype=np.int64).reshape(2, 3).T,  # not contiguous
        "be": np.arange(4, dtype=">i4"),  # big-endian
        "nested": {"lr": 0.1, "steps": [1, 2, 3], "name": "run", "big": 2**80, "none": None},
        "raw": b"\x00\x01",
    }
    ckptio.save(str(tmp_path / "ckpt"), state)
    back = ckptio.load(str(tmp_path / "ckpt"), framework="np")
    assert np.array_equal(back["w"], state["w"])
    assert np.array_equal(back["t"], state["t"])
    assert np.array_equal(back["be"], np.arange(4, dtype=np.int32))
    assert back["nested"] == state["nested"]
    assert back["raw"] == state["raw"]


@needs_torch
def test_torch_state_round_trips_and_safetensors_reads_what_ckptio_writes(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = {
        "a": torch.randn(4, 5),
        "b": torch.arange(10, dtype=torch.bfloat16),
        "c": torch.randn(3, 3).t(),
        "d": torch.ones(2, dtype=torch.float8_e4m3fn),
    }
    written = ckptio.save(str(tmp_path / "m.safetensors"), state, format="safetensors")
    assert written == [str(tmp_path / "m.safetensors")]
    theirs = load_file(tmp_path / "m.safetensors")
    for key, value in state.items():
        assert torch.equal(theirs[key].view(torch.uint8), value.contiguous().view(torch.uint8)), key
    ours = ckptio.load(str(tmp_path / "m.safetensors"))
    for key, value in state.items():
        assert ours[key].dtype == value.dtype
        assert torch.equal(ours[key].view(torch.uint8), value.contiguous().view(torch.uint8))


def test_safetensors_holds_tensors_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`lr` is not a tensor"):
        ckptio.save(str(tmp_path / "m.safetensors"), {"lr": 0.1}, format="safetensors")


def test_objects_that_cannot_be_saved_are_named(tmp_path: Path) -> None:
    target = str(tmp_path / "ckpt")
    with pytest.raises(TypeError, match=f"^{target}: `opt/fn`: a value of type `builtin_function"):
        ckptio.save(target, {"opt": {"fn": print}})
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("format", ["ckptio", "torch"])
def test_integer_keys_load_as_integers_at_every_level(tmp_path: Path, format: str) -> None:
    state = {0: {"exp_avg": np.ones(2)}, 1: np.zeros(1)}
    nested = {"state": {3: np.ones(1)}, "groups": [{"params": [3]}]}
    for name, tree in [("top", state), ("nested", nested)]:
        target = str(tmp_path / f"{name}.{format}")
        ckptio.save(target, tree, format=format)
        back = ckptio.load(target, framework="np")
        assert _keys(back) == _keys(tree), name


def _keys(tree: object) -> object:
    if isinstance(tree, dict):
        return {k: _keys(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_keys(v) for v in tree]
    return None


@pytest.mark.parametrize(
    "state, refused",
    [
        ({"m": {True: np.ones(1)}}, r"`m`: the dict key True \(of type `bool`\)"),
        ({1.5: np.ones(1)}, r"`the top level`: the dict key 1\.5 \(of type `float`\)"),
        ({"m": {(1, 2): 3}}, r"`m`: the dict key \(1, 2\) \(of type `tuple`\)"),
        ({"m": {2**70: 3}}, r"`m`: the dict key 1180591620717411303424 \(of type `int`\)"),
        ({"s": {0: np.ones(1), "x": 1}}, r"`s`: a dict whose keys mix strings and integers"),
        ({0: np.ones(1), "x": 1}, r"`the top level`: a dict whose keys mix strings and integers"),
    ],
)
def test_dict_keys_that_would_load_as_other_keys_are_refused(
    tmp_path: Path, state: dict, refused: str
) -> None:
    for format in ("ckptio", "torch"):
        target = str(tmp_path / f"x.{format}")
        with pytest.raises(TypeError, match=f"^{target}: {refused}"):
            ckptio.save(target, state, format=format)
        assert not Path(target).exists()


def test_a_one_file_format_refuses_a_directory_and_writes_nothing(tmp_path: Path) -> None:
    for format, ext in (("safetensors", "safetensors"), ("torch", "pt")):
        for target in (str(tmp_path), str(tmp_path / "new") + "/"):
            with pytest.raises(ValueError, match=f"names a directory.*/model.{ext}"):
                ckptio.save(target, {"x": np.zeros(2)}, format=format)
    assert list(tmp_path.iterdir()) == []


def test_without_a_format_the_name_decides_as_for_convert(tmp_path: Path) -> None:
    state = {"w": np.arange(4, dtype=np.float32)}
    for name, format in (
        ("model.safetensors", "safetensors"),
        ("last.ckpt", "torch"),
        ("weights.pt", "torch"),
        ("pytorch_model.bin", "torch"),
        ("step-3", "ckptio"),
    ):
        ckptio.save(str(tmp_path / name), state)
        assert (tmp_path / name).is_file() == (format != "ckptio"), name
        assert ckptio.open(str(tmp_path / name)).format.startswith(format), name
        assert np.array_equal(ckptio.load(str(tmp_path / name), framework="np")["w"], state["w"])
    ckptio.save(str(tmp_path / "dir.pt"), state, format="ckptio")
    assert ckptio.open(str(tmp_path / "dir.pt")).format.startswith("ckptio")
    with pytest.raises(ValueError, match=r'^format "pickle": "ckptio", "safetensors" or "torch"$'):
        ckptio.save(str(tmp_path / "x.pkl"), state, format="pickle")
    assert not (tmp_path / "x.pkl").exists()


def test_a_committed_checkpoint_is_not_overwritten(tmp_path: Path) -> None:
    ckptio.save(str(tmp_path / "ckpt"), {"x": np.zeros(2)})
    with pytest.raises(ckptio.CommittedError):
        ckptio.save(str(tmp_path / "ckpt"), {"x": np.ones(2)})


def test_opaque_objects_from_a_load_save_back_as_they_were(tmp_path: Path) -> None:
    from conftest import FIXTURES

    loaded = ckptio.load(str(FIXTURES / "torch" / "training_state.pt"), framework="np")
    opaque = loaded["info"]
    assert isinstance(opaque, ckptio.Opaque)
    ckptio.save(str(tmp_path / "ckpt"), loaded)
    again = ckptio.load(str(tmp_path / "ckpt"), framework="np")
    assert isinstance(again["info"], ckptio.Opaque)
    assert (again["info"].module, again["info"].name) == (opaque.module, opaque.name)


def test_progress_is_told_every_byte(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    ckptio.save(
        str(tmp_path / "m.safetensors"),
        {"x": np.zeros(1 << 20, dtype=np.uint8)},
        format="safetensors",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen[-1][0] == 1 << 20


@needs_torch
@pytest.mark.parametrize("name", ["lightning.ckpt", "fabric.ckpt", "state_dict.pt", "views.pt"])
def test_a_torch_file_written_loads_in_torch_as_what_was_read(tmp_path: Path, name: str) -> None:
    import torch

    source = FIXTURES / "torch" / name
    state = ckptio.load(str(source))
    out = tmp_path / "out.pt"
    assert ckptio.save(str(out), state, format="torch") == [str(out)]
    theirs = torch.load(out, weights_only=True)
    same_as_torch(theirs, torch.load(source, weights_only=True))
    same_as_torch(ckptio.load(str(out)), theirs)


@needs_torch
def test_every_dtype_torch_has_round_trips_through_a_torch_file(tmp_path: Path) -> None:
    import torch

    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64,
              torch.complex128, torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn,
              torch.float8_e5m2]  # fmt: skip
    state = {
        str(d): torch.arange(12, dtype=torch.float32).reshape(3, 4).to(d)[:, 1:] for d in dtypes
    }
    state["scalar"] = torch.tensor(3.5)
    state["empty"] = torch.zeros(0, 4)
    out = tmp_path / "dtypes.pt"
    ckptio.save(str(out), state, format="torch")
    same_as_torch(torch.load(out, weights_only=True), state)


def test_a_torch_file_refuses_what_it_cannot_hold_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata"):
        ckptio.save(str(tmp_path / "x.pt"), {"a": 1}, format="torch", metadata={"k": "v"})
    opaque = ckptio.load(str(FIXTURES / "torch" / "training_state.pt"), framework="np")
    with pytest.raises(ValueError, match=r"cannot be written to a torch file"):
        ckptio.save(str(tmp_path / "y.pt"), opaque, format="torch")
    assert not (tmp_path / "y.pt").exists()
