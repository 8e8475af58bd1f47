"""Fabric through `CkptioCheckpointIO`: `save`, `load` (with the remainder returned and strict
and partial loads), `load_raw`; and the plugin's own contract: what `weights_only` changes,
removal, plain Lightning checkpoints written by torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, configured

import ckptio

lightning = pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

from lightning.fabric import Fabric  # noqa: E402

from ckptio.lightning import CkptioCheckpointIO  # noqa: E402


@pytest.fixture(params=["local", "garage", "azure"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A directory URI and its store options."""
    if request.param == "local":
        return str(tmp_path), {}
    found = configured(request.param)
    return found.uri("fabric").rstrip("/"), found.options


def fabric(options: dict[str, str]) -> Fabric:
    return Fabric(accelerator="cpu", devices=1, plugins=[CkptioCheckpointIO(options)])


def model(bias: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8, bias=bias), torch.nn.Linear(8, 2))


def test_fabric_saves_and_loads_state_returning_the_remainder(
    place: tuple[str, dict[str, str]],
) -> None:
    root, options = place
    f = fabric(options)
    net = model()
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    f.save(f"{root}/step-1.ckpt", {"model": net, "optimizer": optimizer, "step": 1, "tag": "a"})

    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    fresh_optimizer = torch.optim.AdamW(fresh.parameters())
    remainder = f.load(f"{root}/step-1.ckpt", {"model": fresh, "optimizer": fresh_optimizer})
    assert remainder == {"step": 1, "tag": "a"}
    for (name, a), b in zip(net.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    assert torch.equal(
        fresh_optimizer.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert fresh_optimizer.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]


def test_fabric_load_raw_fills_a_module_from_a_plain_state_dict(
    place: tuple[str, dict[str, str]],
) -> None:
    root, options = place
    f = fabric(options)
    net = model()
    f.save(f"{root}/weights.pt", net.state_dict())
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    f.load_raw(f"{root}/weights.pt", other)
    for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_model_missing_a_bias_loads_with_strict_false_and_fails_clearly_with_strict_true(
    place: tuple[str, dict[str, str]],
) -> None:
    root, options = place
    f = fabric(options)
    f.save(f"{root}/full.ckpt", {"model": model(bias=True)})
    partial = model(bias=False)
    f.load(f"{root}/full.ckpt", {"model": partial}, strict=False)
    assert torch.equal(partial[0].weight, model(bias=True)[0].weight)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*0\.bias"):
        f.load(f"{root}/full.ckpt", {"model": model(bias=False)}, strict=True)


def test_weights_only_refuses_objects_that_are_otherwise_inert_placeholders() -> None:
    io = CkptioCheckpointIO()
    path = str(FIXTURES / "torch" / "training_state.pt")
    loose: dict[str, Any] = io.load_checkpoint(path)
    assert any(isinstance(v, ckptio.Opaque) for v in _values(loose))
    with pytest.raises(ckptio.UnsafeError, match="strict"):
        io.load_checkpoint(path, weights_only=True)


def _values(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _values(v)]
    if isinstance(tree, (list, tuple)):
        return [x for v in tree for x in _values(v)]
    return [tree]


def test_a_lightning_checkpoint_torch_wrote_loads_and_map_location_moves_it() -> None:
    io = CkptioCheckpointIO()
    path = FIXTURES / "torch" / "lightning.ckpt"
    ours = io.load_checkpoint(str(path), map_location=lambda storage, loc: storage)
    theirs = torch.load(path, weights_only=True)
    assert ours["global_step"] == theirs["global_step"]
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    meta = io.load_checkpoint(str(path), map_location=torch.device("meta"))
    assert all(t.device.type == "meta" for t in meta["state_dict"].values())


def test_remove_takes_away_a_checkpoint_and_a_missing_one_is_no_error(
    place: tuple[str, dict[str, str]],
) -> None:
    root, options = place
    io = CkptioCheckpointIO(options)
    io.save_checkpoint({"step": torch.tensor(1)}, f"{root}/gone.ckpt")
    assert ckptio.stat(f"{root}/gone.ckpt", options or None)["size"]
    io.remove_checkpoint(f"{root}/gone.ckpt")
    with pytest.raises(FileNotFoundError):
        ckptio.stat(f"{root}/gone.ckpt", options or None)
    io.remove_checkpoint(f"{root}/gone.ckpt")


def test_an_object_a_torch_file_cannot_hold_is_named_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    io = CkptioCheckpointIO()
    with pytest.raises(TypeError, match=r"hyper_parameters/config.*cannot be saved"):
        io.save_checkpoint({"hyper_parameters": {"config": object()}}, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()
