"""Python benchmark: a 1 GiB safetensors file of 256 F32 tensors (and the same as a torch.save
file) loaded into torch tensors, every tensor touched, with the `ckptio` package and its peers,
from local disk, nginx (HTTP) and Garage (S3); then one tensor of the remote file (time and
bytes moved on loopback). Each case runs in its own process and times its own work, from
after its imports; every case of a target runs once per round (--local-runs rounds locally,
--runs remotely) and the table has medians, with peak RSS from GNU time. Run through
`scripts/bench python` (the package is built into the torch venv)."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import NamedTuple

from common import GiB, MiB, garage, in_rounds, measure, settle, skip, upload

# Each process times its own work, from after its imports (which take seconds, and vary more
# than the work does on a busy machine) to every tensor's bytes touched: clone copies them
# (and is dropped at once). The seconds go to the file named by CKPTIO_BENCH_WORK.
START = """
import os, time
T0 = time.perf_counter()
"""

STOP = """
with open(os.environ["CKPTIO_BENCH_WORK"], "w") as f:
    f.write(str(time.perf_counter() - T0))
"""

TOUCH = (
    """
total = 0
for t in sd.values():
    total += t.clone().nbytes
assert total == int(sys.argv[-1]), total
"""
    + STOP
)

CKPTIO_LOAD = (
    """
import sys, json, ckptio, torch
"""
    + START
    + """
sd = ckptio.load(sys.argv[1], json.loads(sys.argv[2]) or None, mmap="--no-mmap" not in sys.argv,
                 verify="--no-verify" not in sys.argv)
"""
    + TOUCH
)

ST_LOAD_FILE = (
    """
import sys
from safetensors.torch import load_file
"""
    + START
    + """
sd = load_file(sys.argv[1])
"""
    + TOUCH
)

ST_SAFE_OPEN = (
    """
import sys, torch
from safetensors import safe_open
"""
    + START
    + """
sd = {}
with safe_open(sys.argv[1], framework="pt") as f:
    for k in f.keys():
        sd[k] = f.get_tensor(k)
"""
    + TOUCH
)

TORCH_MMAP = (
    """
import sys, torch
"""
    + START
    + """
sd = torch.load(sys.argv[1], mmap=True, weights_only=True)
"""
    + TOUCH
)

RUNAI = (
    """
import sys, torch
from runai_model_streamer import SafetensorsStreamer
"""
    + START
    + """
sd = {}
with SafetensorsStreamer() as streamer:
    streamer.stream_file(sys.argv[1])
    for name, tensor in streamer.get_tensors():
        sd[name] = tensor.clone()
"""
    + TOUCH
)

HF_TRANSFER = (
    """
import sys, hf_transfer
from safetensors.torch import load_file
"""
    + START
    + """
hf_transfer.download(url=sys.argv[1], filename=sys.argv[2], max_files=16, chunk_size=8 << 20)
sd = load_file(sys.argv[2])
"""
    + TOUCH
)

BOTO3 = (
    """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from safetensors.torch import load_file
"""
    + START
    + """
endpoint, bucket, key, dest = sys.argv[1:5]
boto3.client("s3", endpoint_url=endpoint).download_file(
    bucket, key, dest, Config=TransferConfig(max_concurrency=16, multipart_chunksize=8 << 20))
sd = load_file(dest)
"""
    + TOUCH
)

S3TORCH = (
    """
import sys, torch
from s3torchconnector import S3Checkpoint, S3ClientConfig
from safetensors.torch import load
"""
    + START
    + """
endpoint, region, uri = sys.argv[1], sys.argv[2], sys.argv[3]
checkpoint = S3Checkpoint(region=region, endpoint=endpoint,
                          s3client_config=S3ClientConfig(force_path_style=True))
with checkpoint.reader(uri) as reader:
    if uri.endswith(".pt"):
        sd = torch.load(reader, weights_only=True)
    else:
        sd = load(reader.read())
"""
    + TOUCH
)

# One tensor of the remote file, and the bytes that crossed loopback meanwhile.
ONE_CKPTIO = (
    """
import sys, json, ckptio, torch
"""
    + START
    + """
with ckptio.safe_open(sys.argv[1], framework="pt", storage_options=json.loads(sys.argv[2]) or None) as f:
    t = f.get_tensor("layers.100.weight")
assert t.nbytes == 4 << 20
"""
    + STOP
)

ONE_SAFETENSORS_HTTP = (
    """
import sys, hf_transfer, torch
from safetensors import safe_open
"""
    + START
    + """
hf_transfer.download(url=sys.argv[1], filename=sys.argv[2], max_files=16, chunk_size=8 << 20)
with safe_open(sys.argv[2], framework="pt") as f:
    t = f.get_tensor("layers.100.weight")
"""
    + STOP
)

ONE_RUNAI = (
    """
import sys, torch
from runai_model_streamer import SafetensorsStreamer
"""
    + START
    + """
with SafetensorsStreamer() as streamer:
    streamer.stream_file(sys.argv[1])
    for name, tensor in streamer.get_tensors():
        if name == "layers.100.weight":
            t = tensor.clone()
"""
    + STOP
)

ONE_BOTO3 = (
    """
import sys, boto3, torch
from safetensors import safe_open
"""
    + START
    + """
endpoint, bucket, key, dest = sys.argv[1:5]
boto3.client("s3", endpoint_url=endpoint).download_file(bucket, key, dest)
with safe_open(dest, framework="pt") as f:
    t = f.get_tensor("layers.100.weight")
"""
    + STOP
)

BASELINE = """
import torch, ckptio, safetensors.torch, boto3
"""

# A Lightning checkpoint of 1 GiB of tensors saved through a CheckpointIO plugin: ckptio's to
# S3, Lightning's own (fsspec/s3fs) to S3, and torch.save to a local file (the floor). The
# tensors are new in every run: Garage stores a block it already holds only once, which would
# flatter whichever tool wrote byte-identical files, and no training run saves the same
# weights twice.
SAVE_SETUP = """
import os, sys, json, torch
g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
checkpoint = {"state_dict": {f"layers.{i}.weight": torch.randn(1 << 20, generator=g) for i in range(256)},
              "epoch": 3, "global_step": 100, "optimizer_states": [], "lr_schedulers": []}
"""

SAVE_CKPTIO = (
    SAVE_SETUP
    + """
from ckptio.lightning import CkptioCheckpointIO
"""
    + START
    + """
CkptioCheckpointIO(json.loads(sys.argv[2])).save_checkpoint(checkpoint, sys.argv[1])
"""
    + STOP
)

SAVE_LIGHTNING = (
    SAVE_SETUP
    + """
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
"""
    + START
    + """
TorchCheckpointIO().save_checkpoint(checkpoint, sys.argv[1])
"""
    + STOP
)

SAVE_TORCH = (
    SAVE_SETUP
    + START
    + """
torch.save(checkpoint, sys.argv[1])
"""
    + STOP
)

SAVE_BASELINE = (
    SAVE_SETUP
    + """
import ckptio.lightning, lightning.fabric.plugins.io.torch_io
"""
)

WRITE = """
import sys, torch
from safetensors.torch import save_file
n, st, pt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
g = torch.Generator().manual_seed(0)
sd = {f"layers.{i}.weight": torch.randn(1 << 20, generator=g) for i in range(n)}
save_file(sd, st)
torch.save(sd, pt)
"""


def loopback_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    return 0


def moved(cmd, env):
    """Runs `cmd`; returns (seconds of work it timed itself, bytes received on loopback by the
    whole process) of that run."""
    with tempfile.NamedTemporaryFile(prefix="ckptio-work-") as work:
        before = loopback_bytes()
        subprocess.run(
            cmd, env=dict(env or os.environ, CKPTIO_BENCH_WORK=work.name), check=True, stdout=subprocess.DEVNULL
        )
        return float(work.read()), loopback_bytes() - before


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    # Local rows take 0.1 s of work each, where a busy moment of the host decides the ratio.
    ap.add_argument("--local-runs", type=int, default=7)
    ap.add_argument("--tmpfs", default="/dev/shm")
    args = ap.parse_args()

    http_root = os.environ["CKPTIO_TEST_HTTP_ROOT"]
    base_url = os.environ["CKPTIO_TEST_HTTP_URI"]
    s3, bucket, s3_env = garage()
    st, pt = os.path.join(http_root, "bench.safetensors"), os.path.join(http_root, "bench.pt")
    print("bench: writing 1 GiB as safetensors and as torch.save (256 F32 tensors)", file=sys.stderr)
    subprocess.run([sys.executable, "-c", WRITE, "256", st, pt], check=True)
    tensor_bytes = 256 * (4 << 20)
    for path in (st, pt):
        upload(s3, s3_env, path, f"s3://{bucket}/{os.path.basename(path)}")
    s3_options = json_options(s3)
    runai_env = dict(
        s3_env,
        RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING="0",
        AWS_CA_BUNDLE="",
        RUNAI_STREAMER_S3_ENDPOINT=s3["endpoint"],
    )
    tmp = tempfile.mkdtemp(prefix="ckptio-bench-", dir=args.tmpfs)
    dl = os.path.join(tmp, "downloaded")
    py, n, results = sys.executable, str(tensor_bytes), []
    try:
        # What every process holds before any tensor: the interpreter, torch and the libraries.
        baseline = min(measure([[py, "-c", BASELINE]])[1] for _ in range(args.runs))
        url = base_url + "bench.safetensors"
        s3_st, s3_pt = f"s3://{bucket}/bench.safetensors", f"s3://{bucket}/bench.pt"
        rounds(
            results,
            args.local_runs,
            [
                Case("ckptio.load", "local", [py, "-c", CKPTIO_LOAD, st, "{}", n]),
                Case("ckptio.load(mmap=False)", "local", [py, "-c", CKPTIO_LOAD, st, "{}", "--no-mmap", n]),
                Case("safetensors load_file", "local", [py, "-c", ST_LOAD_FILE, st, n]),
                Case("safetensors safe_open loop", "local", [py, "-c", ST_SAFE_OPEN, st, n]),
                Case("ckptio.load (.pt)", "local", [py, "-c", CKPTIO_LOAD, pt, "{}", n]),
                # torch.load(mmap=True) checks no CRC-32; ckptio.load does unless asked not to.
                Case("ckptio.load(verify=False) (.pt)", "local", [py, "-c", CKPTIO_LOAD, pt, "{}", "--no-verify", n]),
                Case("torch.load(mmap=True) (.pt)", "local", [py, "-c", TORCH_MMAP, pt, n]),
                Case("runai SafetensorsStreamer", "local", [py, "-c", RUNAI, st, n]),
            ],
        )
        rounds(
            results,
            args.runs,
            [
                Case("ckptio.load", "HTTP", [py, "-c", CKPTIO_LOAD, url, "{}", n]),
                Case("hf_transfer + load_file", "HTTP", [py, "-c", HF_TRANSFER, url, dl + ".st", n]),
            ],
        )
        rounds(
            results,
            args.runs,
            [
                Case("ckptio.load", "S3", [py, "-c", CKPTIO_LOAD, s3_st, s3_options, n], s3_env),
                Case("ckptio.load (.pt)", "S3", [py, "-c", CKPTIO_LOAD, s3_pt, s3_options, n], s3_env),
                Case("runai SafetensorsStreamer", "S3", [py, "-c", RUNAI, s3_st, n], runai_env, optional=True),
                *(
                    Case(label, "S3", [py, "-c", S3TORCH, s3["endpoint"], s3["region"], uri, n], s3_env, optional=True)
                    for label, uri in (
                        ("s3torchconnector + load", s3_st),
                        ("s3torchconnector + torch.load (.pt)", s3_pt),
                    )
                ),
                Case(
                    "boto3 + load_file",
                    "S3",
                    [py, "-c", BOTO3, s3["endpoint"], bucket, "bench.safetensors", dl + ".st", n],
                    s3_env,
                ),
            ],
        )
        one = [
            ("HTTP", "ckptio safe_open", [py, "-c", ONE_CKPTIO, url, "{}"], None),
            ("HTTP", "hf_transfer + safe_open", [py, "-c", ONE_SAFETENSORS_HTTP, url, dl + ".one"], None),
            ("S3", "ckptio safe_open", [py, "-c", ONE_CKPTIO, s3_st, s3_options], s3_env),
            ("S3", "runai SafetensorsStreamer", [py, "-c", ONE_RUNAI, s3_st], runai_env),
            (
                "S3",
                "boto3 + safe_open",
                [py, "-c", ONE_BOTO3, s3["endpoint"], bucket, "bench.safetensors", dl + ".one"],
                s3_env,
            ),
        ]
        # Saves: the baseline process makes the tensors and imports everything, saving nothing.
        save_env = dict(s3_env, FSSPEC_S3_ENDPOINT_URL=s3["endpoint"])
        save_base = min(measure([[py, "-c", SAVE_BASELINE]], save_env)[1] for _ in range(args.runs))
        saves = []
        rounds(
            saves,
            args.runs,
            [
                Case(
                    "ckptio CkptioCheckpointIO",
                    "S3",
                    [py, "-c", SAVE_CKPTIO, f"s3://{bucket}/save/ckptio.ckpt", s3_options],
                    save_env,
                ),
                Case(
                    "Lightning TorchCheckpointIO (s3fs)",
                    "S3",
                    [py, "-c", SAVE_LIGHTNING, f"s3://{bucket}/save/lightning.ckpt"],
                    save_env,
                ),
                Case("torch.save", "local tmpfs", [py, "-c", SAVE_TORCH, dl + ".ckpt"], save_env),
            ],
        )
        one_rows = []
        for target, label, cmd, env in one:
            try:
                seconds, received = moved(cmd, env)
                one_rows.append((target, label, seconds, received))
            except subprocess.CalledProcessError as e:
                one_rows.append((target, label, None, f"failed ({e.returncode})"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, tensor_bytes, baseline, one_rows, f"{args.local_runs} runs locally and {args.runs} remotely")
    report_saves(saves, tensor_bytes, save_base)


class Case(NamedTuple):
    """One row: a command that times its own work, run as a process of its own."""

    label: str
    target: str
    cmd: list[str]
    env: dict[str, str] | None = None
    # A peer that may not run against these servers: its failure is reported, not fatal.
    optional: bool = False


def rounds(results, runs, cases):
    """Runs every case once per round, `runs` rounds, each round starting with the next case
    and each run on a settled machine, so that a host that speeds up or slows down meanwhile
    moves every case alike; appends each case's medians (wall time, the work it timed itself)
    and peak RSS."""
    samples = [([], [], []) for _ in cases]
    running = set(range(len(cases)))
    for i in in_rounds(len(cases), runs, running):
        case = cases[i]
        settle()
        try:
            with tempfile.NamedTemporaryFile(prefix="ckptio-work-") as work:
                wall, peak = measure([case.cmd], dict(case.env or os.environ, CKPTIO_BENCH_WORK=work.name))
                seconds = float(work.read())
        except SystemExit as e:
            skip(e, case.label, case.target, case.optional)
            running.discard(i)
            continue
        for values, value in zip(samples[i], (wall, seconds, peak), strict=True):
            values.append(value)
    for i in sorted(running):
        (walls, works, rss), case = samples[i], cases[i]
        results.append(
            {
                "tool": case.label,
                "target": case.target,
                "median_s": statistics.median(walls),
                "work_s": statistics.median(works),
                "runs_s": works,
                "peak_rss": max(rss),
            }
        )
        print(f"  {case.target:5} {case.label:36} {statistics.median(works):7.3f} s", file=sys.stderr)


def report_saves(saves, tensor_bytes, base_rss):
    runs = len(saves[0]["runs_s"])
    print(
        f"\nSaving a Lightning checkpoint of 1 GiB of tensors through a CheckpointIO; median of {runs}; "
        f"work s from after the imports and the tensors made to the save returned; peak RSS over a "
        f"process that made the tensors ({base_rss / MiB:.0f} MiB; bound: +256 MiB)\n"
    )
    print("| target | tool | work s | GiB/s | wall s | peak RSS over baseline MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for r in saves:
        print(
            f"| {r['target']} | {r['tool']} | {r['work_s']:.3f} | {tensor_bytes / GiB / r['work_s']:.2f} | "
            f"{r['median_s']:.3f} | {(r['peak_rss'] - base_rss) / MiB:.0f} |"
        )


def json_options(s3):
    import json

    return json.dumps({k: s3[k] for k in ("endpoint", "access_key_id", "secret_access_key", "region")})


def report(results, tensor_bytes, base_rss, one_rows, runs):
    print(
        f"\n1 GiB of tensors (256 F32 × 4 MiB) into torch, every tensor touched; median of {runs}, "
        f"every case of a target run once per round. "
        f"Each process times its own work, from after its imports to the last tensor touched "
        f"(work s; the whole process, imports included, is wall s); RSS is over a process that "
        f"imports torch and the libraries ({base_rss / MiB:.0f} MiB; bound: tensor bytes + 128 MiB)\n"
    )
    print("| target | tool | work s | GiB/s | × fastest peer | wall s | peak RSS over baseline MiB | bound MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    bound = (tensor_bytes + 128 * MiB) / MiB
    by_target = {}
    for r in results:
        by_target.setdefault(r["target"], []).append(r)
    for target, rows in by_target.items():
        peers = [r["work_s"] for r in rows if not r["tool"].startswith("ckptio")]
        fastest = min(peers) if peers else None
        for r in rows:
            ratio = f"{fastest / r['work_s']:.2f}" if fastest and r["tool"].startswith("ckptio") else ""
            print(
                f"| {target} | {r['tool']} | {r['work_s']:.3f} | {tensor_bytes / GiB / r['work_s']:.2f} | "
                f"{ratio} | {r['median_s']:.3f} | {(r['peak_rss'] - base_rss) / MiB:.0f} | {bound:.0f} |"
            )
    print("\nOne 4 MiB tensor (`layers.100.weight`) of the remote safetensors file\n")
    print("| target | tool | work s | bytes on loopback |")
    print("|---|---|---:|---:|")
    for target, label, seconds, received in one_rows:
        s = f"{seconds:.3f}" if seconds is not None else "—"
        print(f"| {target} | {label} | {s} | {received} |")


if __name__ == "__main__":
    main()
