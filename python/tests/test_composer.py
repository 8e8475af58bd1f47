"""Composer through ckptio, for real: a `Trainer` saves every epoch to S3 (Garage) through
`CkptioUploader`, a second `Trainer` resumes from there through `CkptioObjectStore` and ends
with the weights of a run never interrupted; `load_checkpoint` fetches only what it keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import configured

composer = pytest.importorskip("composer")
torch = pytest.importorskip("torch")

from composer import Trainer  # noqa: E402
from composer.models import ComposerClassifier  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import ckptio  # noqa: E402
from ckptio.composer import CkptioObjectStore, CkptioUploader, load_checkpoint  # noqa: E402


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def root() -> tuple[str, dict[str, str]]:
    found = configured("garage")
    return found.uri("composer").rstrip("/"), found.options


def model() -> ComposerClassifier:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    return ComposerClassifier(net, num_classes=4)


def data() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 8, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def trainer(duration: str, **kwargs: Any) -> Trainer:
    """A run saving every epoch under `{run_name}/checkpoints` (relative: the tests run in
    their temporary directory), which is also each checkpoint's name on the store."""
    net = model()
    return Trainer(
        model=net,
        train_dataloader=data(),
        optimizers=torch.optim.Adam(net.parameters(), lr=1e-2),
        max_duration=duration,
        device="cpu",
        seed=17,
        progress_bar=False,
        log_to_console=False,
        save_folder="{run_name}/checkpoints",
        save_interval="1ep",
        **kwargs,
    )


def weights(t: Trainer) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in t.state.model.state_dict().items()}


def test_a_trainer_saves_through_ckptio_and_another_resumes_from_there(
    root: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, options = root
    first = trainer("2ep", run_name="run", loggers=[CkptioUploader(uri, options)])
    first.fit()
    first.close()
    names = ckptio.walk(uri + "/", options)
    saved = sorted(n for n in names if n.startswith("run/checkpoints/ep"))
    assert saved == ["run/checkpoints/ep1-ba4-rank0.pt", "run/checkpoints/ep2-ba8-rank0.pt"], names

    store = CkptioObjectStore(uri, options)
    assert store.get_object_size(saved[-1]) == (tmp_path / saved[-1]).stat().st_size
    resumed = trainer("4ep", run_name="run2", load_path=saved[-1], load_object_store=store)
    assert int(resumed.state.timestamp.epoch) == 2
    resumed.fit()
    straight = trainer("4ep", run_name="run3")
    straight.fit()
    got, want = weights(resumed), weights(straight)
    for key, value in want.items():
        assert torch.equal(got[key], value), f"{key} differs from the uninterrupted run"
    resumed.close()
    straight.close()


def test_load_checkpoint_fetches_only_the_model_when_asked(
    root: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, options = root
    first = trainer("1ep", run_name="lazy", loggers=[CkptioUploader(uri, options)])
    first.fit()
    first.close()
    ckpt = f"{uri}/lazy/checkpoints/ep1-ba4-rank0.pt"
    info = ckptio.open(ckpt, options)
    model_bytes = sum(info.info(p).nbytes for p in info.keys() if p.startswith("state/model/"))
    optimizer_bytes = sum(info.info(p).nbytes for p in info.keys() if "optimizers" in p)
    assert optimizer_bytes > 0

    moved: list[int] = []
    fresh = trainer("1ep", run_name="lazy2")
    rng = load_checkpoint(
        ckpt,
        fresh.state,
        storage_options=options,
        load_weights_only=True,
        progress=lambda done, total: moved.append(done),
    )
    assert rng is None
    # The model's tensors and the zip headers between their records (coalesced): no optimizer.
    model_tensors = [p for p in info.keys() if p.startswith("state/model/")]
    assert model_bytes <= max(moved) <= model_bytes + 256 * len(model_tensors), moved
    assert max(moved) < model_bytes + optimizer_bytes / 2
    for key, value in weights(first).items():
        assert torch.equal(weights(fresh)[key], value), key

    again = trainer("1ep", run_name="lazy3")
    rng = load_checkpoint(
        ckpt, again.state, storage_options=options, ignore_keys=["state/optimizers/*"]
    )
    assert isinstance(rng, list) and rng
    assert int(again.state.timestamp.epoch) == 1
    fresh.close()
    again.close()


def test_the_object_store_contract(root: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    uri, options = root
    store = CkptioObjectStore(uri, options)
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 100_000)
    calls: list[tuple[int, int]] = []
    store.upload_object("dir/blob.bin", src, callback=lambda a, b: calls.append((a, b)))
    assert calls[-1] == (100_000, 100_000)
    assert store.get_uri("dir/blob.bin") == f"{uri}/dir/blob.bin"
    assert store.list_objects("dir/") == ["dir/blob.bin"]
    dest = tmp_path / "out" / "blob.bin"
    store.download_object("dir/blob.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(FileExistsError):
        store.download_object("dir/blob.bin", dest)
    store.download_object("dir/blob.bin", dest, overwrite=True)
    with pytest.raises(FileNotFoundError):
        store.get_object_size("dir/missing.bin")
    with pytest.raises(FileNotFoundError):
        store.download_object("dir/missing.bin", tmp_path / "missing.bin")


def test_a_load_path_that_names_nothing_fails_before_training(
    root: tuple[str, dict[str, str]],
) -> None:
    uri, options = root
    store = CkptioObjectStore(uri, options)
    with pytest.raises(FileNotFoundError, match=r"nothing/here\.pt"):
        trainer("1ep", run_name="missing", load_path="nothing/here.pt", load_object_store=store)
