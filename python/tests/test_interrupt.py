"""Ctrl-C stops a long download with `KeyboardInterrupt`, and the download resumes where it
stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import ckptio

SCRIPT = """
import sys, ckptio
try:
    ckptio.download(sys.argv[1], sys.argv[2], chunk_size=1 << 20, concurrency=2,
                    rate_limit=4 << 20)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


def test_ctrl_c_interrupts_a_download_and_a_rerun_resumes(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = np.random.default_rng(1).bytes(24 << 20)
    src.write_bytes(data)
    dest = tmp_path / "dest.bin"
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(src), str(dest)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 3 and "interrupted" in out, (child.returncode, out)
    assert not dest.exists(), "a partial file never takes the final name"
    state = json.loads(Path(str(dest) + ".part.json").read_text())
    assert 0 < len(state["done"]) < 24, state["done"]
    assert ckptio.download(str(src), str(dest)) == len(data)
    assert dest.read_bytes() == data
