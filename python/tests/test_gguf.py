"""GGUF files as the `gguf` package reads them: plain tensors bit-identical, quantized blocks
raw by default and, with `dequantize=True`, the F32 values the package's `dequantize` gives,
from a local path and from every server."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import FIXTURES, Backend, expected, sha256, tensor_bytes

import ckptio

GGUF = expected("gguf/expected.json")
TINY = FIXTURES / "gguf" / "tiny.gguf"
HAS_ML_DTYPES = importlib.util.find_spec("ml_dtypes") is not None


@pytest.mark.parametrize("name", sorted(GGUF))
def test_every_fixture_reads_as_the_gguf_package_reads_it(name: str) -> None:
    want = GGUF[name]
    raw = ckptio.open(str(FIXTURES / "gguf" / name), framework="np")
    values = ckptio.open(str(FIXTURES / "gguf" / name), framework="np", dequantize=True)
    assert raw.format == "GGUF"
    assert sorted(raw.keys()) == sorted(want["tensors"])
    for path, w in want["tensors"].items():
        if w["ggml_type"] == "BF16" and not HAS_ML_DTYPES:
            with pytest.raises(ckptio.UnsupportedError, match="ml_dtypes"):
                raw.get_tensor(path)
            continue
        got = raw.get_tensor(path)
        assert sha256(tensor_bytes(got)) == w["raw_sha256"], f"{name}: {path}"
        q = raw.quantization(path)
        if q is None:
            assert list(got.shape) == w["shape"], path
        else:
            assert q == (w["ggml_type"], tuple(w["shape"])), path
            assert got.dtype == np.uint8
        if "f32_sha256" in w and q is not None:
            decoded = values.get_tensor(path)
            assert decoded.dtype == np.float32 and list(decoded.shape) == w["shape"], path
            assert sha256(tensor_bytes(decoded)) == w["f32_sha256"], f"{name}: {path}"
    assert raw.metadata["general.architecture"] == "llama"


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is not installed")
def test_dequantized_values_equal_the_gguf_package_live() -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    ours = ckptio.load(str(TINY), framework="np", dequantize=True)
    for t in GGUFReader(TINY).tensors:
        if t.tensor_type.name == "IQ4_NL":
            assert ours[t.name].dtype == np.uint8  # raw blocks: ckptio does not decode it
            continue
        theirs = dequantize(t.data, t.tensor_type) if t.data.dtype == np.uint8 else t.data
        if t.tensor_type.name == "BF16":
            continue  # the package reads BF16 as raw uint8 pairs; compared by hash above
        assert ours[t.name].tobytes() == np.ascontiguousarray(theirs).tobytes(), t.name


def test_a_gguf_file_reads_the_same_remotely(backend: Backend) -> None:
    backend.seed("tiny.gguf", TINY.read_bytes())
    remote = ckptio.open(backend.uri("tiny.gguf"), backend.options, framework="np", dequantize=True)
    for path, key in (("q4_k", "f32_sha256"), ("q6_k", "f32_sha256"), ("f16", "raw_sha256")):
        want = GGUF["tiny.gguf"]["tensors"][path][key]
        assert sha256(tensor_bytes(remote.get_tensor(path))) == want, f"[{backend.name}] {path}"
    rows = remote.get_rows("q8_0", 1, 3)
    assert np.array_equal(rows, remote.get_tensor("q8_0")[1:3])
