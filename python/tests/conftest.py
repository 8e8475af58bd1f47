"""What the Python tests share: the committed fixtures, the servers `scripts/servers` starts
(found through the same `CKPTIO_TEST_<NAME>_*` variables as the Rust suites), and torch when it
is installed (a numpy-only run skips what needs it)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import ckptio

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BACKENDS = ["s3s", "moto", "garage", "seaweedfs", "gcs", "azure", "http"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_bytes(t: Any) -> bytes:
    """A torch tensor's or numpy array's elements, contiguous and little-endian, as bytes."""
    if hasattr(t, "resolve_conj"):
        import torch

        t = t.detach().resolve_conj().resolve_neg().contiguous()
        if t.dtype == torch.complex32:
            t = torch.view_as_real(t).contiguous()
        return bytes(t.reshape(-1).view(torch.uint8).numpy().tobytes()) if t.numel() else b""
    import numpy as np

    return bytes(np.ascontiguousarray(t).tobytes())


def expected(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


needs_torch = pytest.mark.skipif(not has_torch(), reason="torch is not installed")


@dataclass
class Backend:
    """A server the suite runs against: where it is, its options, how to put objects there."""

    name: str
    base: str
    options: dict[str, str]
    seed_kind: str | None = None
    root: str | None = None
    prefix: str = field(default_factory=lambda: f"py-{uuid.uuid4().hex[:12]}/")

    @property
    def writable(self) -> bool:
        return self.name in ("s3s", "moto", "garage", "seaweedfs", "azure")

    def uri(self, key: str) -> str:
        return f"{self.base}{self.prefix}{key}"

    def seed(self, key: str, data: bytes) -> None:
        if self.name == "http":
            assert self.root, "CKPTIO_TEST_HTTP_ROOT names the server's directory"
            path = Path(self.root) / self.prefix / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        elif self.seed_kind == "gcs-json-api":
            endpoint = self.options["storage_emulator_host"].rstrip("/")
            bucket = urllib.parse.urlparse(self.base).netloc
            name = urllib.parse.quote(f"{self.prefix}{key}", safe="")
            url = f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
            request = urllib.request.Request(url, data=data, method="POST")
            request.add_header("content-type", "application/octet-stream")
            urllib.request.urlopen(request).read()
        else:
            with tempfile.NamedTemporaryFile() as f:
                f.write(data)
                f.flush()
                ckptio.cp(f.name, self.uri(key), dst_options=self.options)

    def seed_dir(self, key: str, local: Path) -> None:
        for path in sorted(local.iterdir()):
            if path.is_file():
                self.seed(f"{key}/{path.name}", path.read_bytes())


def _backend(name: str) -> Backend | None:
    base = os.environ.get(f"CKPTIO_TEST_{name.upper()}_URI")
    if not base:
        return None
    options = json.loads(os.environ.get(f"CKPTIO_TEST_{name.upper()}_OPTIONS") or "{}")
    return Backend(
        name,
        base if base.endswith("/") else base + "/",
        {k: str(v) for k, v in options.items()},
        os.environ.get(f"CKPTIO_TEST_{name.upper()}_SEED"),
        os.environ.get(f"CKPTIO_TEST_{name.upper()}_ROOT"),
    )


def _required() -> set[str]:
    return {n.strip() for n in os.environ.get("CKPTIO_TEST_REQUIRE", "").split(",") if n.strip()}


def configured(name: str) -> Backend:
    """The server `name` the environment configures; the test is skipped when it is not, and
    fails when it is required (CKPTIO_TEST_REQUIRE) but missing."""
    found = _backend(name)
    if found is None:
        if name in _required():
            pytest.fail(f"{name} is required (CKPTIO_TEST_REQUIRE) but not configured")
        pytest.skip(f"{name} is not configured (CKPTIO_TEST_{name.upper()}_URI)")
    return found


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each server the environment configures; one that is required but missing fails."""
    found = configured(request.param)
    yield found
    if found.name == "http" and found.root:
        shutil.rmtree(Path(found.root) / found.prefix, ignore_errors=True)


def leaf_equal(got: Any, want: Any) -> bool:
    if isinstance(got, int) and isinstance(want, str):
        return str(got) == want  # integers past 64 bits are recorded as their digits
    if isinstance(want, float) and isinstance(got, float):
        return got == want or (math.isnan(got) and math.isnan(want))
    return bool(got == want)


def same_as_torch(ours: Any, theirs: Any, at: str = "") -> None:
    """`ours` is `theirs` as torch.load gives it: the same containers, key types, values and
    tensor bytes."""
    import torch

    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), at
        assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape), at
        assert tensor_bytes(ours) == tensor_bytes(theirs), at
        return
    assert type(ours) is type(theirs) or (isinstance(theirs, dict) and type(ours) is dict), (
        f"{at}: {type(ours)} for {type(theirs)}"
    )
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), at
        for key, value in theirs.items():
            same_as_torch(ours[key], value, f"{at}/{key}")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), at
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same_as_torch(a, b, f"{at}/{i}")
    else:
        assert leaf_equal(ours, theirs), f"{at}: {ours!r} != {theirs!r}"
