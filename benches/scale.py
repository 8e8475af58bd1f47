"""Scale benchmark: how ckptio's time and memory grow with the work, one table each.

1. `ckptio inspect` of checkpoints of 1k, 10k and 100k tensors: safetensors (Python's
   safetensors), torch (`torch.save`), DCP (`dcp.save`, one process) and the ckptio layout
   (`ckptio convert`), with the time per tensor, which stays flat when the cost is linear.
2. Streaming every tensor of a 1, 4 and 16 GiB safetensors file (sparse: the bytes are zeros the
   file system does not store, so the disk is not what is measured) with peak RSS, which must stay
   flat: the stream's budget, not the file's size.
3. A DCP checkpoint as 8, 64 and 1024 ranks write it (each of 256 tensors in one row-chunk per rank, one
   data file per rank, `.metadata` from torch's own dataclasses; torch's `FileSystemReader` loads
   it back before it is timed): `inspect`, and every tensor assembled from its chunks.

Run through `scripts/bench scale`."""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from common import GiB, MiB, case

COUNTS = (1_000, 10_000, 100_000)
STREAM_GIB = (1, 4, 16)
RANKS = (8, 64, 1024)

# Each writer is a script of its own, run by the interpreter that has its package.
WRITE_SAFETENSORS = """
import sys, numpy as np
from safetensors.numpy import save_file
n, path = int(sys.argv[1]), sys.argv[2]
save_file({f"layers.{i}.w": np.full(4, i, dtype=np.float32) for i in range(n)}, path)
"""

WRITE_TORCH = """
import sys, torch
n, path = int(sys.argv[1]), sys.argv[2]
torch.save({f"layers.{i}.w": torch.full((4,), float(i)) for i in range(n)}, path)
"""

WRITE_DCP = """
import sys, torch, torch.distributed.checkpoint as dcp
n, path = int(sys.argv[1]), sys.argv[2]
state = {f"layers.{i}.w": torch.full((4,), float(i)) for i in range(n)}
dcp.save(state, storage_writer=dcp.FileSystemWriter(path), no_dist=True)
"""

# A DCP checkpoint as `ranks` processes write one: each tensor is split by rows, one chunk per
# rank; rank r's chunks go to `__r_0.distcp` as `torch.save` records (as FileSystemWriter writes
# them), and `.metadata` is built from torch's dataclasses. torch then loads it as the oracle.
WRITE_DCP_RANKS = """
import io, os, pickle, sys, torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, Metadata, MetadataIndex,
    TensorProperties, TensorStorageMetadata)
ranks, tensors, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows, cols = 4 * ranks, 16
os.makedirs(path)
full = {f"layers.{t}.w": torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols) + t
        for t in range(tensors)}
state_md, storage = {}, {}
for name, tensor in full.items():
    chunks = []
    for r in range(ranks):
        chunks.append(ChunkStorageMetadata(offsets=torch.Size([4 * r, 0]), sizes=torch.Size([4, cols])))
    state_md[name] = TensorStorageMetadata(properties=TensorProperties(dtype=tensor.dtype),
                                           size=tensor.size(), chunks=chunks)
for r in range(ranks):
    relative = f"__{r}_0.distcp"
    with open(os.path.join(path, relative), "wb") as f:
        for name, tensor in full.items():
            offset = f.tell()
            buf = io.BytesIO()
            torch.save(tensor[4 * r:4 * (r + 1)].clone(), buf)
            f.write(buf.getbuffer())
            index = MetadataIndex(fqn=name, offset=torch.Size([4 * r, 0]))
            storage[index] = _StorageInfo(relative_path=relative, offset=offset, length=f.tell() - offset)
with open(os.path.join(path, ".metadata"), "wb") as f:
    pickle.dump(Metadata(state_dict_metadata=state_md, storage_data=storage), f)
back = {name: torch.zeros(rows, cols) for name in full}
dcp.load(back, storage_reader=dcp.FileSystemReader(path), no_dist=True)
assert all(torch.equal(back[k], full[k]) for k in full), "torch does not read it back"
"""


def write_sparse_safetensors(path, size, tensors=256):
    """A safetensors file of `size` bytes of F32 zeros in `tensors` tensors; the data is a hole."""
    each = size // tensors
    header = {
        f"t{i:04d}": {"dtype": "F32", "shape": [each // 4], "data_offsets": [i * each, (i + 1) * each]}
        for i in range(tensors)
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + tensors * each)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckptio", required=True)
    ap.add_argument("--materialize", required=True)
    ap.add_argument("--torch-python", required=True)
    ap.add_argument("--dir", default=None, help="where the checkpoints go (default: a temp dir on disk)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ckptio-bench-scale-", dir=args.dir)
    try:
        inspect = inspect_table(args, work)
        stream = stream_table(args, work)
        ranks = ranks_table(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(inspect, stream, ranks)


def inspect_table(args, work):
    results = []
    for n in COUNTS:
        print(f"bench: writing checkpoints of {n} tensors", file=sys.stderr)
        st = os.path.join(work, f"{n}.safetensors")
        subprocess.run([sys.executable, "-c", WRITE_SAFETENSORS, str(n), st], check=True)
        pt = os.path.join(work, f"{n}.pt")
        subprocess.run([args.torch_python, "-c", WRITE_TORCH, str(n), pt], check=True)
        dc = os.path.join(work, f"{n}-dcp")
        subprocess.run([args.torch_python, "-c", WRITE_DCP, str(n), dc], check=True)
        ck = os.path.join(work, f"{n}-ckptio")
        subprocess.run([args.ckptio, "-q", "convert", st, ck], check=True, stdout=subprocess.DEVNULL)
        for fmt, path in (("safetensors", st), ("torch", pt), ("DCP", dc), ("ckptio", ck)):
            case(results, args.runs, fmt, str(n), "", [[args.ckptio, "inspect", path]])
    return results


def stream_table(args, work):
    results = []
    for gib in STREAM_GIB:
        path = os.path.join(work, f"{gib}gib.safetensors")
        write_sparse_safetensors(path, gib * GiB)
        case(results, args.runs, "stream", f"{gib} GiB", "", [[args.materialize, path]])
        os.unlink(path)
    return results


def ranks_table(args, work):
    results = []
    for ranks in RANKS:
        print(f"bench: writing a DCP checkpoint as {ranks} ranks, checked by torch", file=sys.stderr)
        path = os.path.join(work, f"dcp-{ranks}-ranks")
        subprocess.run([args.torch_python, "-c", WRITE_DCP_RANKS, str(ranks), "256", path], check=True)
        case(results, args.runs, "inspect", f"{ranks} ranks", "", [[args.ckptio, "inspect", path]])
        case(results, args.runs, "read every tensor", f"{ranks} ranks", "", [[args.materialize, path]])
    return results


def report(inspect, stream, ranks):
    print("\n`ckptio inspect` of N tensors (median s; µs per tensor; peak RSS MiB):\n")
    formats = ("safetensors", "torch", "DCP", "ckptio")
    print("| tensors | " + " | ".join(formats) + " |")
    print("|---:|" + "---|" * len(formats))
    for n in COUNTS:
        cells = []
        for fmt in formats:
            r = next(r for r in inspect if r["tool"] == fmt and r["target"] == str(n))
            cells.append(f"{r['median_s']:.3f} s; {r['median_s'] / n * 1e6:.1f} µs; {r['peak_rss'] / MiB:.0f} MiB")
        print(f"| {n:,} | " + " | ".join(cells) + " |")
    print("\nStreaming every tensor of a sparse safetensors file (the default 64 MiB budget):\n")
    print("| size | median s | GiB/s | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    for gib, r in zip(STREAM_GIB, stream, strict=True):
        print(f"| {gib} GiB | {r['median_s']:.3f} | {gib / r['median_s']:.2f} | {r['peak_rss'] / MiB:.0f} |")
    print("\nA DCP checkpoint of 256 tensors written as R ranks (256 × R chunks, R data files):\n")
    print("| ranks | chunks | inspect s | inspect RSS MiB | read every tensor s | read RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in RANKS:
        i = next(r for r in ranks if r["tool"] == "inspect" and r["target"] == f"{n} ranks")
        m = next(r for r in ranks if r["tool"] == "read every tensor" and r["target"] == f"{n} ranks")
        print(
            f"| {n} | {256 * n:,} | {i['median_s']:.3f} | {i['peak_rss'] / MiB:.0f} | {m['median_s']:.3f} | "
            f"{m['peak_rss'] / MiB:.0f} |"
        )


if __name__ == "__main__":
    main()
