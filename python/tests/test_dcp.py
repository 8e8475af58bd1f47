"""torch.distributed.checkpoint through ckptio, for real: FSDP2 models sharded over 2 and 4
gloo processes save to S3 (Garage) and a local directory and load with another world size; the
results equal torch's own `FileSystemWriter`/`FileSystemReader`, a checkpoint copied down with
`ckptio cp` loads in torch's reader, each rank reads only its share, and `.metadata` commits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import configured

import ckptio

torch = pytest.importorskip("torch")

RUN = Path(__file__).with_name("dcp_run.py")


def run(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]


def result(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(path, weights_only=True)
    return loaded


def same(a: Any, b: Any, at: str = "") -> None:
    if isinstance(b, torch.Tensor):
        assert torch.equal(a, b), at
    elif isinstance(b, dict):
        assert list(a) == list(b), at
        for k in b:
            same(a[k], b[k], f"{at}/{k}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), at
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{at}/{i}")
    else:
        assert a == b, at


@pytest.fixture(scope="module", params=["garage", "azure"])
def place(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    found = configured(request.param)
    return found.uri("dcp").rstrip("/"), found.options


@pytest.fixture(scope="module")
def saved(
    place: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One save by 2 ranks: to S3 through ckptio, and to a local directory through torch."""
    uri, options = place
    tmp = tmp_path_factory.mktemp("dcp")
    out = tmp / "saved.pt"
    run("save", "--world", "2", "--uri", f"{uri}/step-1", "--options", json.dumps(options),
        "--fs-dir", str(tmp / "torch"), "--async-uri", f"{uri}/async",
        "--out", str(out))  # fmt: skip
    return {"uri": f"{uri}/step-1", "options": options, "tmp": tmp, **result(out)}


@pytest.mark.parametrize("world", [4, 1])
def test_a_checkpoint_saved_by_2_ranks_loads_into_another_world_size(
    saved: dict[str, Any], world: int
) -> None:
    tmp: Path = saved["tmp"]
    ours, theirs = tmp / f"ours-{world}.pt", tmp / f"theirs-{world}.pt"
    options = json.dumps(saved["options"])
    run("load", "--world", str(world), "--uri", saved["uri"], "--options", options,
        "--out", str(ours))  # fmt: skip
    run("load", "--world", str(world), "--uri", str(tmp / "torch"), "--torch-reader",
        "--out", str(theirs))  # fmt: skip
    loaded, reference = result(ours), result(theirs)
    same(loaded["state"], reference["state"])
    same(loaded["state"], saved["state"])
    assert loaded["state"]["step"] == 7

    # Each rank moved only the saved chunks its shard overlaps: with 2 chunks per tensor and 4
    # ranks, one chunk of each tensor (half the data), never the whole.
    read = loaded["report"]["bytes_read"]
    data = sum(
        int(ckptio.stat(f"{saved['uri']}/{n}", saved["options"])["size"] or 0)
        for n in ckptio.walk(saved["uri"] + "/", saved["options"])
        if n.endswith(".distcp")
    )
    if world == 1:
        assert read == [data], (read, data)
    else:
        assert all(r <= data / 2 + (64 << 10) for r in read), (read, data)


def test_the_layout_is_torchs_so_a_copy_loads_in_torchs_reader(
    saved: dict[str, Any],
) -> None:
    tmp: Path = saved["tmp"]
    local = tmp / "copied"
    ckptio.cp(saved["uri"] + "/", str(local) + "/", src_options=saved["options"])
    out = tmp / "copied.pt"
    run("load", "--world", "2", "--uri", str(local), "--torch-reader", "--out", str(out))
    same(result(out)["state"], saved["state"])
    names = sorted(p.name for p in local.iterdir())
    assert names[-1] == ".metadata" or ".metadata" in names
    assert all(n == ".metadata" or (n.startswith("__") and n.endswith(".distcp")) for n in names)


def test_metadata_commits_once_and_async_save_works(saved: dict[str, Any]) -> None:
    assert "committed checkpoint is there" in saved["report"]["second_save"]
    tmp: Path = saved["tmp"]
    out = tmp / "async.pt"
    uri = saved["uri"].rsplit("/", 1)[0] + "/async"
    run("load", "--world", "2", "--uri", uri, "--options", json.dumps(saved["options"]),
        "--out", str(out))  # fmt: skip
    same(result(out)["state"], saved["state"])


def test_a_checkpoint_without_metadata_is_not_one(saved: dict[str, Any]) -> None:
    from ckptio.dcp import CkptioStorageReader

    reader = CkptioStorageReader(saved["uri"] + "-never-committed", saved["options"])
    with pytest.raises(FileNotFoundError, match=r"never-committed/\.metadata"):
        reader.read_metadata()


def test_a_hostile_metadata_is_refused_not_run(tmp_path: Path) -> None:
    import pickle

    from ckptio.dcp import CkptioStorageReader

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("pwned",))

    (tmp_path / ".metadata").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load global `builtins\.print`"):
        CkptioStorageReader(str(tmp_path)).read_metadata()


def test_a_truncated_metadata_is_corrupt_naming_the_file(saved: dict[str, Any]) -> None:
    from ckptio.dcp import CkptioStorageReader

    whole = ckptio._ckptio.get(f"{saved['uri']}/.metadata", saved["options"]).tobytes()
    cut = saved["uri"] + "-cut"
    ckptio._ckptio.put(f"{cut}/.metadata", whole[: len(whole) // 2], saved["options"])
    with pytest.raises(ckptio.CorruptError, match=r"-cut/\.metadata: not a DCP metadata pickle"):
        CkptioStorageReader(cut, saved["options"]).read_metadata()


def test_a_broken_chunk_or_a_lying_offset_is_named_by_file_and_range(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    torch_dir: Path = saved["tmp"] / "torch"
    broken = tmp_path / "broken"
    shutil.copytree(torch_dir, broken)
    data = sorted(broken.glob("__0_*.distcp"))[0]
    raw = bytearray(data.read_bytes())
    raw[: len(raw) // 2] = bytes(len(raw) // 2)  # the first archives' records zeroed
    data.write_bytes(bytes(raw))
    out = tmp_path / "out.pt"

    def load_broken() -> subprocess.CompletedProcess[str]:
        args = ["load", "--world", "1", "--uri", str(broken), "--out", str(out)]
        return subprocess.run(
            [sys.executable, str(RUN), *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    done = load_broken()
    assert done.returncode != 0
    assert "CorruptError" in done.stderr and f"{data.name} bytes " in done.stderr, done.stderr[
        -3000:
    ]
    assert "is not a torch.save archive" in done.stderr

    data.write_bytes(bytes(raw[:100]))  # shorter than .metadata says
    done = load_broken()
    assert done.returncode != 0
    assert f"{data.name}: bytes 0.." in done.stderr, done.stderr[-3000:]
    assert "are outside the object (100 bytes)" in done.stderr

    data.unlink()  # a data file .metadata names is gone
    done = load_broken()
    assert done.returncode != 0
    assert "FileNotFoundError" in done.stderr and data.name in done.stderr, done.stderr[-3000:]
