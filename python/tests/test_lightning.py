"""Lightning through `CkptioCheckpointIO`, for real: `Trainer.fit` runs in their own processes,
SIGKILLed mid-epoch and mid-save, resume from the last checkpoint on a local directory, S3
(Garage) and HTTP (nginx WebDAV), and end with the weights of a run never interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import configured

import ckptio

lightning = pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

RUN = Path(__file__).with_name("lightning_run.py")


@dataclass
class Target:
    """Where a run checkpoints, and what its process needs to get there."""

    name: str
    dirpath: str
    options: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    find_last: str = "lightning"


def _target(name: str, tmp: Path) -> Target:
    if name == "local":
        return Target(name, str(tmp / "checkpoints"), {})
    found = configured(name)
    # Lightning's `ckpt_path="last"` lists the directory through fsspec, which cannot on these
    # stores: an HTTP directory has no HTML index (WebDAV lists by PROPFIND), and s3fs lists
    # keys without their `s3://`, which Lightning 2.6 then looks for on the local disk. Runs
    # there find their last checkpoint through the plugin (`CkptioCheckpointIO.latest`).
    if name == "http":
        # Lightning's ModelCheckpoint lists its directory through fsspec, which on HTTP reads
        # the server's HTML index: the test server serves one under /indexed/.
        dirpath = f"{found.base}indexed/{found.prefix}lightning"
        return Target(name, dirpath, found.options, find_last="ckptio")
    options = found.options
    env = {
        # Lightning's ModelCheckpoint keeps its books (exists, ls) through fsspec's s3fs.
        "AWS_ACCESS_KEY_ID": options["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": options["secret_access_key"],
        "AWS_DEFAULT_REGION": options.get("region", "us-east-1"),
        "FSSPEC_S3_ENDPOINT_URL": options["endpoint"],
    }
    return Target(name, found.uri("lightning"), options, env, find_last="ckptio")


def fit(target: Target, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(RUN), "--dirpath", target.dirpath, "--out", str(out)]
    cmd += ["--options", json.dumps(target.options), "--find-last", target.find_last, *args]
    env = {**os.environ, **target.env, "PYTHONHASHSEED": "0"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def weights(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(path, weights_only=True)
    return loaded


def resumed_at(out: Path, target: Target) -> int:
    """The epoch the run that wrote `out` started at; it must have resumed from last.ckpt."""
    started = json.loads(Path(f"{out}.json").read_text())
    if target.find_last == "ckptio":
        assert started["ckpt_path"] == f"{target.dirpath}/last.ckpt", started
    first: int = started["first_epoch"]
    return first


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The final weights of a run that is never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "final.pt"
    run = fit(Target("local", str(tmp / "checkpoints"), {}), out)
    assert run.returncode == 0, run.stderr[-3000:]
    return weights(out)


def same_weights(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), f"{key} differs from the uninterrupted run"


def resume_to_the_end(target: Target, tmp_path: Path, reference: dict[str, Any]) -> None:
    """A new run resumes from last.ckpt at epoch 2 and ends with the uninterrupted weights."""
    out = tmp_path / "final.pt"
    resumed = fit(target, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_at(out, target) == 2
    same_weights(weights(out), reference)


def checkpoints(target: Target) -> list[str]:
    return sorted(ckptio.walk(target.dirpath.rstrip("/") + "/", target.options or None))


@pytest.mark.parametrize("name", ["local", "garage", "http"])
def test_a_run_killed_mid_epoch_resumes_from_the_last_checkpoint_bit_exact(
    name: str, tmp_path: Path, reference: dict[str, Any]
) -> None:
    target = _target(name, tmp_path)
    killed = fit(target, tmp_path / "unused.pt", "--kill-mid-epoch", "2")
    assert killed.returncode == -9, killed.stderr[-3000:]
    # Epochs 0 and 1 were saved: the two best and last.ckpt, nothing half-written.
    names = checkpoints(target)
    assert "last.ckpt" in names
    assert len([n for n in names if n.startswith("epoch=")]) == 2, names
    last = ckptio.load(f"{target.dirpath}/last.ckpt", target.options or None)
    assert (last["epoch"], last["global_step"]) == (1, 16)
    assert isinstance(last["optimizer_states"][0]["state"], dict)
    assert list(last["optimizer_states"][0]["state"]) == [0, 1, 2, 3, 4, 5]
    assert last["hyper_parameters"]["betas"] == (0.9, 0.99)

    resume_to_the_end(target, tmp_path, reference)
    names = checkpoints(target)
    assert sorted(n for n in names if n.startswith("epoch=")) == [
        "epoch=2-step=24.ckpt",
        "epoch=3-step=32.ckpt",
    ], names


@pytest.mark.parametrize("name", ["local", "garage", "http"])
def test_a_run_killed_mid_save_leaves_the_previous_checkpoint_loadable(
    name: str, tmp_path: Path, reference: dict[str, Any]
) -> None:
    target = _target(name, tmp_path)
    killed = fit(target, tmp_path / "unused.pt", "--kill-mid-save", "2")
    assert killed.returncode == -9, killed.stderr[-3000:]
    # The save at the end of epoch 2 died halfway: what is there is epoch 1's, whole.
    last = ckptio.load(f"{target.dirpath}/last.ckpt", target.options or None)
    assert last["epoch"] == 1
    names = checkpoints(target)
    assert not any(n.startswith("epoch=2") for n in names), names
    # A process without ckptio loads it too, once it is copied down.
    local = tmp_path / "last.ckpt"
    ckptio.download(f"{target.dirpath}/last.ckpt", str(local), target.options or None)
    plain = torch.load(local, weights_only=True)
    assert plain["global_step"] == 16
    assert torch.equal(plain["state_dict"]["hidden.weight"], last["state_dict"]["hidden.weight"])

    resume_to_the_end(target, tmp_path, reference)
