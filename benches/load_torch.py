"""torch benchmark: every tensor of a 1 GiB torch.save file (256 F32 tensors of 4 MiB) with
ckptio (open + streaming materialize) from local disk, nginx and S3 (Garage), against
`torch.load(mmap=True)` and `torch.load()` on the local file and "download the whole file,
then torch.load" for the remote ones; then one tensor from the remote file (time and bytes).
Run through `scripts/bench torch`. Reports medians, ratios and peak RSS (GNU time's %M)."""

import os
import shutil
import subprocess
import sys
import tempfile

from common import case, format_args, ratio_table, served

# Touches every tensor's bytes (clone copies them, as ckptio's materialize does).
READ_ALL = """
total = 0
for t in sd.values():
    total += t.clone().nbytes
print(total)
"""

LOAD_MMAP = (
    """
import sys, torch
sd = torch.load(sys.argv[1], mmap=True, weights_only=True)
"""
    + READ_ALL
)

LOAD = (
    """
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
"""
    + READ_ALL
)

DOWNLOAD_THEN_LOAD_HTTP = (
    """
import sys, torch, hf_transfer
url, dest = sys.argv[1], sys.argv[2]
hf_transfer.download(url=url, filename=dest, max_files=8, chunk_size=8 << 20)
sd = torch.load(dest, mmap=True, weights_only=True)
"""
    + READ_ALL
)

DOWNLOAD_THEN_LOAD_S3 = (
    """
import sys, torch, boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, key, dest = sys.argv[1:5]
boto3.client("s3", endpoint_url=endpoint).download_file(bucket, key, dest,
    Config=TransferConfig(max_concurrency=8, multipart_chunksize=8 << 20))
sd = torch.load(dest, mmap=True, weights_only=True)
"""
    + READ_ALL
)

WRITE = """
import sys, torch
n, path = int(sys.argv[1]), sys.argv[2]
g = torch.Generator().manual_seed(0)
torch.save({f"layers.{i}.weight": torch.randn(1 << 20, generator=g) for i in range(n)}, path)
"""


def main():
    args = format_args()
    f = served("bench.pt", WRITE, "a 1 GiB torch file (256 F32 tensors of 4 MiB) with torch.save")
    dl_dir = tempfile.mkdtemp(prefix="ckptio-bench-", dir=args.tmpfs)
    try:
        results = run_cases(args, f, os.path.join(dl_dir, "downloaded.pt"))
        one = one_tensor(args, f.url, f.s3_uri, f.env)
    finally:
        shutil.rmtree(dl_dir, ignore_errors=True)
    report(results, f.size, one)


def run_cases(args, f, dl):
    results, runs = [], args.runs
    py = sys.executable
    case(results, runs, "ckptio stream", "local", "", [[args.materialize, f.local]])
    case(results, runs, "torch.load(mmap=True)", "local", "", [[py, "-c", LOAD_MMAP, f.local]])
    case(results, runs, "torch.load()", "local", "", [[py, "-c", LOAD, f.local]])
    case(results, runs, "ckptio stream", "HTTP", "", [[args.materialize, f.url]])
    case(results, runs, "hf_transfer + torch.load", "HTTP", "", [[py, "-c", DOWNLOAD_THEN_LOAD_HTTP, f.url, dl]])
    case(results, runs, "ckptio stream", "S3", "", [[args.materialize, f.s3_uri]], env=f.env)
    case(
        results,
        runs,
        "boto3 + torch.load",
        "S3",
        "",
        [[py, "-c", DOWNLOAD_THEN_LOAD_S3, f.s3["endpoint"], f.bucket, "bench.pt", dl]],
        env=f.env,
    )
    return results


def one_tensor(args, url, s3_uri, s3_env):
    """One 4 MiB tensor of the remote file: time, requests and bytes moved."""
    rows = []
    for target, uri, env in [("HTTP", url, None), ("S3", s3_uri, s3_env)]:
        timed = []
        case(timed, args.runs, "ckptio one tensor", target, "", [[args.materialize, uri, "layers.100.weight"]], env=env)
        out = subprocess.run(
            [args.materialize, uri, "layers.100.weight"], env=env, check=True, capture_output=True, text=True
        ).stdout
        moved = out.split("moved ")[1]
        rows.append((target, timed[0]["median_s"], moved.strip()))
    return rows


def report(results, size, one):
    ratio_table(results, size, f"1 torch file of {size / (1 << 30):.2f} GiB (256 F32 tensors); every tensor read")
    print("\nOne 4 MiB tensor (`layers.100.weight`) of the remote file:\n")
    print("| source | median s | moved |")
    print("|---|---:|---|")
    for target, seconds, moved in one:
        print(f"| {target} | {seconds:.3f} | {moved} |")


if __name__ == "__main__":
    main()
