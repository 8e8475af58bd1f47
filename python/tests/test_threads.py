"""Several Python threads read at once: the GIL is released while bytes move, and every
thread gets its own, correct tensors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from conftest import FIXTURES, expected, sha256, tensor_bytes

import ckptio

HF = expected("hf/expected.json")


def test_threads_load_at_once_and_agree() -> None:
    path = str(FIXTURES / "hf" / "variant")

    def load(_: int) -> dict[str, str]:
        tensors = ckptio.open(path, framework="np").read()
        return {k: sha256(tensor_bytes(v)) for k, v in tensors.items()}

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(load, range(16)))
    want = {k: v["sha256"] for k, v in HF["variant"].items()}
    assert all(r == want for r in results)


def test_the_gil_is_free_while_a_download_waits(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(np.random.default_rng(0).bytes(4 << 20))
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        # 4 MiB at 8 MiB/s: half a second in which the other thread must run.
        ckptio.download(
            str(src), str(tmp_path / "out.bin"), chunk_size=256 << 10, rate_limit=8 << 20
        )
    finally:
        done.set()
        counter.join()
    assert ticks > 50, ticks
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
