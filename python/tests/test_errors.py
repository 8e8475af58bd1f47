"""Bad input raises the exception Python code expects, with the library's message; a hostile
pickle is refused and nothing it names runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FIXTURES, needs_torch

import ckptio


def test_a_missing_object_is_file_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        ckptio.open("/nonexistent/nothing-here.safetensors")


def test_a_bad_uri_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        ckptio.open("ftp://host/x")


def test_a_copy_option_neither_side_takes_is_a_value_error(tmp_path: Path) -> None:
    src = str(FIXTURES / "tiny.safetensors")
    with pytest.raises(ValueError, match=r"invalid option `endpiont`: .* nor of s3://b/x's"):
        ckptio.cp(src, "s3://b/x", {"endpiont": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="invalid option `region`"):
        ckptio.cp(src, str(tmp_path / "x"), dst_options={"region": "eu-west-1"})
    assert not (tmp_path / "x").exists()


def test_a_hostile_pickle_is_refused_and_nothing_runs() -> None:
    marker = Path("/tmp/ckptio-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(ckptio.UnsafeError, match=r"posix\.system"):
        ckptio.load(str(FIXTURES / "torch" / "hostile.pt"))
    assert not marker.exists()


def test_a_truncated_file_is_corrupt_naming_it(tmp_path: Path) -> None:
    data = (FIXTURES / "tiny.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 5])
    with pytest.raises(ckptio.CorruptError, match=r"cut\.safetensors"):
        ckptio.open(str(path))


def test_a_plain_pickle_of_torch_tensors_is_unsupported_and_never_run() -> None:
    with pytest.raises(ckptio.UnsupportedError, match=r"plain_torch\.pkl.*torch\.save instead"):
        ckptio.open(str(FIXTURES / "torch" / "plain_torch.pkl"))


def test_an_unknown_tensor_is_a_key_error() -> None:
    checkpoint = ckptio.open(str(FIXTURES / "tiny.safetensors"))
    with pytest.raises(KeyError, match=r"no tensor `nope`"):
        checkpoint.get_tensor("nope")


def test_wrong_credentials_are_a_permission_error() -> None:
    import json

    base = os.environ.get("CKPTIO_TEST_S3S_URI")
    if not base:
        pytest.skip("s3s is not configured")
    options = json.loads(os.environ["CKPTIO_TEST_S3S_OPTIONS"])
    options["secret_access_key"] = "wrong-secret"
    with pytest.raises(PermissionError) as raised:
        ckptio.stat(base + "anything.bin", options)
    assert "wrong-secret" not in str(raised.value)


def test_every_error_is_a_ckptio_error_or_a_builtin_one() -> None:
    for cls in [
        ckptio.UnsafeError,
        ckptio.CorruptError,
        ckptio.UnsupportedError,
        ckptio.TransportError,
        ckptio.CommittedError,
        ckptio.ChangedError,
    ]:
        assert issubclass(cls, ckptio.Error)


def test_warnings_reach_pythons_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    ckpt = tmp_path / "ckpt"
    ckptio.save(str(ckpt), {"x": __import__("numpy").zeros(2)})
    (ckpt / "loot").symlink_to(outside)
    with caplog.at_level(logging.WARNING):
        ckptio.cp(str(ckpt) + "/", str(tmp_path / "copy") + "/")
    assert any("outside" in r.getMessage() for r in caplog.records), caplog.records
    assert not (tmp_path / "copy" / "loot").exists()


def test_errors_pickle_as_the_names_python_imports() -> None:
    import pickle

    err = ckptio.CommittedError("s3://b/ckpt: a committed checkpoint is there")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ckptio.CommittedError and back.args == err.args
    assert ckptio.CorruptError.__module__ == "ckptio"


def test_a_tensor_that_cannot_be_saved_names_the_target_and_its_path(tmp_path: Path) -> None:
    import numpy as np

    target = str(tmp_path / "ckpt")
    state = {"model": {"layers": [{"w": np.ones(2)}, {"w": np.array([object()])}]}}
    with pytest.raises(
        ckptio.UnsupportedError, match=r"ckpt: tensor `model/layers/1/w`: numpy arrays of object"
    ):
        ckptio.save(target, state)
    assert not os.path.exists(target)


@needs_torch
def test_a_meta_tensor_is_refused_by_name_not_by_torchs_copy_error(tmp_path: Path) -> None:
    import torch

    target = str(tmp_path / "model.safetensors")
    with pytest.raises(
        ckptio.UnsupportedError, match=r"tensor `head\.bias`: it is on the meta device"
    ):
        ckptio.save(
            target,
            {"head.weight": torch.ones(2), "head.bias": torch.empty(2, device="meta")},
            format="safetensors",
        )
    assert not os.path.exists(target)
