"""ckptio against an earlier build of itself: the ckptio rows of the download, safetensors,
torch and save benchmarks, each case run with both builds in turn (so drift in the machine
hits both alike). Run through `scripts/bench versions REV`, which builds REV beside the working
tree. The 1 GiB torch file is assembled from torch's own `data.pkl` of a 1 GiB state dict
(`fixtures/torch/gib.data.pkl`), as the tests do, so torch is not needed."""

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import zlib

from common import MiB, garage, measure

WRITE_SAFETENSORS = """
import sys, numpy as np
from safetensors.numpy import save_file
n, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
save_file({f"layers.{i}.weight": rng.standard_normal(1 << 20, dtype=np.float32) for i in range(n)}, path)
"""


def torch_zip(records):
    """A zip laid out as torch writes it: stored entries, payloads 64-byte aligned by an `FB`
    extra field, data descriptors; `records` are (name, bytes)."""
    out, central = bytearray(), bytearray()
    for text, data in records:
        name = text.encode()
        offset = len(out)
        start = offset + 30 + len(name) + 4
        pad = -start % 64
        crc = zlib.crc32(data)
        out += b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", 0, 0x808, 0, 0, 0, 0, 0, 0, len(name), pad + 4)
        out += name + b"FB" + struct.pack("<H", pad) + b"Z" * pad + data
        out += b"PK\x07\x08" + struct.pack("<III", crc, len(data), len(data))
        central += (
            b"PK\x01\x02"
            + struct.pack(
                "<HHHHHHIIIHHHHHII", 0, 0, 0x808, 0, 0, 0, crc, len(data), len(data), len(name), 0, 0, 0, 0, 0, offset
            )
            + name
        )
    cd = len(out)
    out += central
    out += b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(records), len(records), len(central), cd, 0)
    return bytes(out)


def write_torch(path, pkl):
    weight = os.urandom(8192 * 8192 * 4)
    records = [
        ("archive/data.pkl", pkl),
        ("archive/.format_version", b"1"),
        ("archive/.storage_alignment", b"64"),
        ("archive/byteorder", b"little"),
    ]
    records += [(f"archive/data/{i}", weight) for i in range(4)]
    records += [("archive/data/4", os.urandom(4096)), ("archive/version", b"3\n")]
    with open(path, "wb") as f:
        f.write(torch_zip(records))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="a directory with ckptio, get_memory, materialize_all")
    ap.add_argument("--after", required=True, help="the same, of the newer build")
    ap.add_argument("--before-name", default="before")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tmpfs", default="/dev/shm")
    args = ap.parse_args()

    http_root = os.environ["CKPTIO_TEST_HTTP_ROOT"]
    http = os.environ["CKPTIO_TEST_HTTP_URI"]
    s3, bucket, env = garage()
    s5 = ["s5cmd", "--endpoint-url", s3["endpoint"], "cp"]
    print("bench: writing a 1 GiB object, a 1 GiB safetensors file and a 1 GiB torch file", file=sys.stderr)
    blob = os.path.join(http_root, "v-object.bin")
    with open(blob, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(64 * MiB))
    st = os.path.join(http_root, "v.safetensors")
    subprocess.run([sys.executable, "-c", WRITE_SAFETENSORS, "256", st], check=True)
    pt = os.path.join(http_root, "v.pt")
    with open(os.path.join(os.path.dirname(__file__), "..", "fixtures", "torch", "gib.data.pkl"), "rb") as f:
        pkl = f.read()
    write_torch(pt, pkl)
    for name in ["v-object.bin", "v.safetensors", "v.pt"]:
        subprocess.run(
            [*s5, os.path.join(http_root, name), f"s3://{bucket}/{name}"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    work = tempfile.mkdtemp(prefix="ckptio-bench-versions-", dir=args.tmpfs)
    builds = [(args.before_name, args.before), ("now", args.after)]
    rows = []

    def row(label, target, make, env=None, reset=None):
        times = {name: [] for name, _ in builds}
        rss = {name: 0 for name, _ in builds}
        for _ in range(args.runs):
            for name, bindir in builds:
                if reset:
                    reset()
                t, r = measure([make(bindir)], env)
                times[name].append(t)
                rss[name] = max(rss[name], r)
        rows.append((target, label, {n: statistics.median(t) for n, t in times.items()}, rss))
        print(
            f"  {target:5} {label:34} " + "  ".join(f"{n} {statistics.median(t):.3f}s" for n, t in times.items()),
            file=sys.stderr,
        )

    out = os.path.join(work, "out.bin")
    ckpt = os.path.join(work, "ckpt")

    def clear():
        for p in [out, out + ".part", out + ".part.json"]:
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(ckpt, ignore_errors=True)

    s3_ckpt = iter(range(10**6))

    try:
        b = os.path.join
        row("get → memory", "HTTP", lambda d: [b(d, "get_memory"), http + "v-object.bin", "8", str(8 * MiB)])
        row(
            "get → tmpfs file", "HTTP", lambda d: [b(d, "ckptio"), "-q", "get", http + "v-object.bin", out], reset=clear
        )
        row(
            "get → memory",
            "S3",
            lambda d: [b(d, "get_memory"), f"s3://{bucket}/v-object.bin", "8", str(8 * MiB)],
            env=env,
        )
        row(
            "get → tmpfs file",
            "S3",
            lambda d: [b(d, "ckptio"), "-q", "get", f"s3://{bucket}/v-object.bin", out],
            env=env,
            reset=clear,
        )
        for target, prefix, e in [
            ("local", http_root + "/", None),
            ("HTTP", http, None),
            ("S3", f"s3://{bucket}/", env),
        ]:
            row(
                "safetensors: every tensor",
                target,
                lambda d, p=prefix: [b(d, "materialize_all"), p + "v.safetensors"],
                env=e,
            )
            row("torch: every tensor", target, lambda d, p=prefix: [b(d, "materialize_all"), p + "v.pt"], env=e)
        row(
            "save 1 GiB as ckptio",
            "local",
            lambda d: [b(d, "ckptio"), "-q", "convert", st, ckpt, "--to", "ckptio"],
            reset=clear,
        )
        row(
            "save 1 GiB as ckptio",
            "S3",
            lambda d: [b(d, "ckptio"), "-q", "convert", st, f"s3://{bucket}/v-ckpt-{next(s3_ckpt)}", "--to", "ckptio"],
            env=env,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    names = [n for n, _ in builds]
    print(f"\nckptio {names[0]} and now, 1 GiB each, median of {args.runs} runs (alternating)\n")
    print(f"| target | case | {names[0]} s | now s | now ÷ {names[0]} | {names[0]} RSS MiB | now RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for target, label, t, r in rows:
        print(
            f"| {target} | {label} | {t[names[0]]:.3f} | {t['now']:.3f} | {t['now'] / t[names[0]]:.2f} | "
            f"{r[names[0]] / MiB:.0f} | {r['now'] / MiB:.0f} |"
        )


if __name__ == "__main__":
    main()
