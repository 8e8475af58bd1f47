"""The same reads and writes against every server: S3 (s3s, moto, Garage), the GCS emulator
(read side), nginx over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, Backend, expected, needs_torch, sha256, tensor_bytes

import ckptio

HF = expected("hf/expected.json")


def test_a_model_directory_reads_the_same_remotely(backend: Backend) -> None:
    backend.seed_dir("bin", FIXTURES / "hf" / "bin")
    checkpoint = ckptio.open(backend.uri("bin/"), backend.options, framework="np")
    assert checkpoint.format.startswith("sharded torch")
    tensors = checkpoint.read()
    for path, want in HF["bin"].items():
        assert sha256(tensor_bytes(tensors[path])) == want["sha256"], f"[{backend.name}] {path}"


def test_safe_open_reads_one_tensor_of_a_remote_file(backend: Backend) -> None:
    data = (FIXTURES / "hf" / "model" / "model.safetensors").read_bytes()
    backend.seed("model.safetensors", data)
    name = "transformer.h.1.mlp.c_fc.weight"
    with ckptio.safe_open(
        backend.uri("model.safetensors"), framework="np", storage_options=backend.options
    ) as f:
        got = f.get_tensor(name)
        rows = f.get_slice(name)[2:5]
    assert sha256(tensor_bytes(got)) == HF["model"][name]["sha256"]
    assert np.array_equal(rows, got[2:5])


def test_a_torch_file_loads_the_same_remotely(backend: Backend) -> None:
    path = FIXTURES / "torch" / "training_state.pt"
    backend.seed("state.pt", path.read_bytes())
    local = ckptio.load(str(path), framework="np")
    remote = ckptio.load(backend.uri("state.pt"), backend.options, framework="np")
    assert np.array_equal(remote["model"]["body.0.weight"], local["model"]["body.0.weight"])
    assert remote["epoch"] == local["epoch"]


def test_save_then_load_on_a_writable_store(backend: Backend) -> None:
    if not backend.writable:
        return
    state = {"w": np.arange(1000, dtype=np.float32), "step": 7}
    ckptio.save(backend.uri("ckpt"), state, backend.options)
    back = ckptio.load(backend.uri("ckpt"), backend.options, framework="np")
    assert np.array_equal(back["w"], state["w"]) and back["step"] == 7
    assert ckptio.verify(backend.uri("ckpt"), backend.options)["tensors"] == 1
    assert ckptio.rm(backend.uri("ckpt"), backend.options) == "ckptio"


def test_rm_refuses_a_prefix_that_holds_no_checkpoint_unless_forced(backend: Backend) -> None:
    if not backend.writable:
        return
    backend.seed("notes/todo.txt", b"keep me")
    with pytest.raises(FileNotFoundError, match=r"todo\.txt.*not removed"):
        ckptio.rm(backend.uri("notes"), backend.options)
    assert ckptio.walk(backend.uri("notes"), backend.options) == ["todo.txt"]
    assert ckptio.rm(backend.uri("notes"), backend.options, force=True) == "unknown"
    assert ckptio.walk(backend.uri("notes"), backend.options) == []


def test_a_folder_marker_object_is_not_an_entry_of_its_folder(backend: Backend) -> None:
    # An S3 console's "create folder" leaves a zero-byte `step-4/` object; SeaweedFS leaves one
    # where a folder's objects were all deleted. Written with boto3: S3 servers only.
    if not (backend.writable and backend.base.startswith("s3://")):
        return
    boto3 = pytest.importorskip("boto3")
    s3 = boto3.client(
        "s3",
        endpoint_url=backend.options["endpoint"],
        aws_access_key_id=backend.options["access_key_id"],
        aws_secret_access_key=backend.options["secret_access_key"],
        region_name=backend.options.get("region", "us-east-1"),
    )
    bucket = backend.base.removeprefix("s3://").split("/")[0]
    for key, body in [("runs/step-3/", b""), ("runs/step-3/a.txt", b"x"), ("runs/step-4/", b"")]:
        s3.put_object(Bucket=bucket, Key=f"{backend.prefix}{key}", Body=body)
    assert ckptio.walk(backend.uri("runs/step-3"), backend.options) == ["a.txt"]
    listed = [(step, name) for step, name, *_ in ckptio.ls(backend.uri("runs"), backend.options)]
    assert listed == [(3, "step-3")], "an empty folder is no checkpoint, partial or not"


def test_stat_and_download_with_progress(backend: Backend, tmp_path: Path) -> None:
    data = (FIXTURES / "torch" / "views.pt").read_bytes()
    backend.seed("views.pt", data)
    info = ckptio.stat(backend.uri("views.pt"), backend.options)
    assert int(info["size"] or 0) == len(data)
    seen: list[tuple[int, int]] = []
    size = ckptio.download(
        backend.uri("views.pt"),
        str(tmp_path / "views.pt"),
        backend.options,
        chunk_size=4096,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert size == len(data) and (tmp_path / "views.pt").read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    # Into a directory (existing, or named with a trailing `/`), under the object's name.
    (tmp_path / "dir").mkdir()
    for into in (tmp_path / "dir", tmp_path / "new"):
        ckptio.download(backend.uri("views.pt"), str(into) + "/", backend.options)
        assert (into / "views.pt").read_bytes() == data
        assert sorted(p.name for p in into.iterdir()) == ["views.pt"]


def test_ls_and_cp_between_stores(backend: Backend, tmp_path: Path) -> None:
    if not backend.writable:
        return
    for step in (10, 20):
        ckptio.save(backend.uri(f"run/step-{step}"), {"x": np.zeros(3)}, backend.options)
    entries = ckptio.ls(backend.uri("run/"), backend.options, prefix="step-")
    assert [(i, kind, committed) for i, _, kind, committed in entries] == [
        (10, "ckptio", True),
        (20, "ckptio", True),
    ]
    objects, _ = ckptio.cp(
        backend.uri("run/step-20/"), str(tmp_path / "copy") + "/", src_options=backend.options
    )
    assert objects >= 2
    assert np.array_equal(ckptio.load(str(tmp_path / "copy"), framework="np")["x"], np.zeros(3))
    # Shared options configure whichever side takes them: here the store, not the local copy.
    ckptio.cp(str(tmp_path / "copy") + "/", backend.uri("run/step-30/"), backend.options)
    assert [i for i, *_ in ckptio.ls(backend.uri("run/"), backend.options)] == [10, 20, 30]


@needs_torch
def test_a_large_legacy_torch_file_opens_remotely_reading_its_head_only(
    backend: Backend, tmp_path: Path
) -> None:
    import torch

    # 20,000 tensors: the pickles alone are over a MiB, past the first read.
    state = {f"layer.{i:05d}.weight": torch.full((2,), float(i)) for i in range(20_000)}
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    backend.seed("legacy.pt", path.read_bytes())
    checkpoint = ckptio.open(backend.uri("legacy.pt"), backend.options, framework="pt")
    assert checkpoint.format == "torch (legacy pickle stream)"
    assert len(checkpoint) == 20_000
    assert torch.equal(checkpoint.get_tensor("layer.19999.weight"), state["layer.19999.weight"])
    loaded = ckptio.load(backend.uri("legacy.pt"), backend.options)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
