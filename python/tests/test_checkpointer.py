"""`DefaultCheckpointer`'s contract on a local directory and on S3: names, period and force,
keep-last, model-only saves, the latest file found recursively, broken files passed over."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import configured

import ckptio
from ckptio.checkpointer import DefaultCheckpointer


@pytest.fixture(params=["local", "garage", "azure"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str] | None]:
    if request.param == "local":
        return str(tmp_path / "run"), None
    found = configured(request.param)
    return found.uri("run").rstrip("/"), found.options


def names(uri: str, options: dict[str, str] | None) -> list[str]:
    try:
        return ckptio.walk(uri + "/", options)
    except FileNotFoundError:
        return []


def put(uri: str, data: bytes, options: dict[str, str] | None) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        ckptio.cp(f.name, uri, dst_options=options)


def state(epoch: int) -> dict[str, object]:
    return {"w": np.full(4, epoch, np.float32), "epoch": epoch, "betas": (0.9, 0.99)}


def test_saves_by_period_forces_the_last_and_keeps_the_last_n(
    root: tuple[str, dict[str, str] | None],
) -> None:
    uri, options = root
    ckpt = DefaultCheckpointer(save_dir=uri, period=2, keep_last=2, storage_options=options)
    saved = [ckpt.save(state(e), e, force=e == 4) for e in range(5)]
    assert saved == [f"{uri}/model0.pt", None, f"{uri}/model2.pt", None, f"{uri}/model4.pt"]
    assert names(uri, options) == ["model2.pt", "model4.pt"]
    off = DefaultCheckpointer(save_dir=uri, checkpoint=False, storage_options=options)
    assert off.save(state(6), 6) is None


def test_load_finds_the_greatest_index_recursively_and_passes_over_broken_files(
    root: tuple[str, dict[str, str] | None],
) -> None:
    uri, options = root
    DefaultCheckpointer(save_dir=uri, storage_options=options).save(state(3), 3)
    DefaultCheckpointer(save_dir=f"{uri}/later", storage_options=options).save(state(7), 7)
    models = DefaultCheckpointer(save_dir=uri, model_state_save_dir=uri, storage_options=options)
    assert models.save_model({"w": np.zeros(2)}, 99) == f"{uri}/model_model99.pt"
    put(f"{uri}/later/model9.pt", b"PK\x03\x04 cut short", options)
    put(f"{uri}/other8.pt", b"not ours", options)

    latest = DefaultCheckpointer.get_latest_file(uri, "model", "pt", options)
    assert latest == f"{uri}/later/model7.pt"
    loaded = DefaultCheckpointer(load_dir=uri, storage_options=options).load()
    assert loaded is not None
    assert loaded["epoch"] == 7 and loaded["betas"] == (0.9, 0.99)
    assert np.array_equal(np.asarray(loaded["w"]), np.full(4, 7, np.float32))

    chosen = DefaultCheckpointer(load_dir=uri, load_filename="model3.pt", storage_options=options)
    picked = chosen.load()
    assert picked is not None and picked["epoch"] == 3
    assert DefaultCheckpointer(load_dir=f"{uri}/empty", storage_options=options).load() is None
    assert DefaultCheckpointer(storage_options=options).load() is None


def test_delete_existing_checkpoints_clears_the_save_dir_first(
    root: tuple[str, dict[str, str] | None],
) -> None:
    uri, options = root
    first = DefaultCheckpointer(save_dir=uri, storage_options=options)
    first.save(state(1), 1)
    first.save(state(2), 2)
    DefaultCheckpointer(save_dir=uri, delete_existing_checkpoints=True, storage_options=options)
    assert names(uri, options) == []


@dataclasses.dataclass
class Checkpoint:
    module_interface_state: dict[str, object]
    trainer_state: dict[str, object]


def test_a_dataclass_is_saved_as_its_fields(tmp_path: Path) -> None:
    ckpt = DefaultCheckpointer(save_dir=str(tmp_path), load_dir=str(tmp_path))
    ckpt.save(Checkpoint({"w": np.ones(2)}, {"epoch": 1}), 1)
    loaded = ckpt.load()
    assert loaded is not None
    assert set(loaded) == {"module_interface_state", "trainer_state"}
    assert loaded["trainer_state"] == {"epoch": 1}
    with pytest.raises(TypeError, match="dict or a dataclass"):
        ckpt.save([1, 2], 2)


def test_an_arguments_object_configures_it(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class DefaultCheckpointerArguments:
        checkpoint: bool = True
        period: int = 3
        save_dir: str = str(tmp_path)
        file_prefix: str = "ckpt_"
        log_level: str = "INFO"

    ckpt = DefaultCheckpointer.from_args(DefaultCheckpointerArguments())
    assert ckpt.save({"epoch": 3}, 3) == f"{tmp_path}/ckpt_3.pt"
    assert ckpt.save({"epoch": 4}, 4) is None


def test_a_state_that_cannot_be_saved_names_the_file_and_writes_nothing(tmp_path: Path) -> None:
    ckpt = DefaultCheckpointer(str(tmp_path / "run"), file_prefix="epoch", period=1)
    target = str(tmp_path / "run" / "epoch3.pt")
    with pytest.raises(TypeError, match=f"^{target}: `opt`: the dict key 0.5"):
        ckpt.save({"opt": {0.5: np.ones(1)}}, 3)
    with pytest.raises(TypeError, match=f"^{target}: `fn`: a value of type"):
        ckpt.save({"fn": print}, 3)
    assert names(str(tmp_path / "run"), None) == []
