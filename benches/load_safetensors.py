"""safetensors benchmark: inspect + materialize every tensor of a 1 GiB file with ckptio (the
streaming API) from local disk, nginx and S3 (Garage), against Python's safetensors.safe_open on
the local file and "download, then safe_open" for the remote ones. Run through `scripts/bench
safetensors`. Reports medians, ratios and peak RSS (GNU time's %M per process)."""

import os
import shutil
import sys
import tempfile

from common import case, format_args, ratio_table, served

# Reads every tensor of the file at `path` (what each Python case ends with).
READ_ALL = """
from safetensors import safe_open
total = 0
with safe_open(path, framework="numpy") as f:
    for k in f.keys():
        total += f.get_tensor(k).nbytes
print(total)
"""

SAFE_OPEN = (
    """
import sys
path = sys.argv[1]
"""
    + READ_ALL
)

DOWNLOAD_THEN_SAFE_OPEN_HTTP = (
    """
import os, sys, hf_transfer
url, dest = sys.argv[1], sys.argv[2]
hf_transfer.download(url=url, filename=dest, max_files=8, chunk_size=8 << 20)
path = dest
"""
    + READ_ALL
)

DOWNLOAD_THEN_SAFE_OPEN_S3 = (
    """
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, key, dest = sys.argv[1:5]
boto3.client("s3", endpoint_url=endpoint).download_file(bucket, key, dest,
    Config=TransferConfig(max_concurrency=8, multipart_chunksize=8 << 20))
path = dest
"""
    + READ_ALL
)

WRITE = """
import sys, numpy as np
from safetensors.numpy import save_file
n, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
save_file({f"layers.{i}.weight": rng.standard_normal(1 << 20, dtype=np.float32) for i in range(n)}, path)
"""


def main():
    args = format_args()
    f = served(
        "bench.safetensors", WRITE, "a 1 GiB safetensors file (256 F32 tensors of 4 MiB) with Python's safetensors"
    )
    dl_dir = tempfile.mkdtemp(prefix="ckptio-bench-", dir=args.tmpfs)
    try:
        results = run_cases(args, f, os.path.join(dl_dir, "downloaded.safetensors"))
    finally:
        shutil.rmtree(dl_dir, ignore_errors=True)
    report(results, f.size)


def run_cases(args, f, dl):
    results, runs = [], args.runs
    case(results, runs, "ckptio stream", "local", "", [[args.materialize, f.local]])
    case(results, runs, "safe_open (mmap)", "local", "", [[sys.executable, "-c", SAFE_OPEN, f.local]])
    case(results, runs, "ckptio stream", "HTTP", "", [[args.materialize, f.url]])
    case(
        results,
        runs,
        "hf_transfer + safe_open",
        "HTTP",
        "",
        [[sys.executable, "-c", DOWNLOAD_THEN_SAFE_OPEN_HTTP, f.url, dl]],
    )
    case(results, runs, "ckptio stream", "S3", "", [[args.materialize, f.s3_uri]], env=f.env)
    case(
        results,
        runs,
        "boto3 + safe_open",
        "S3",
        "",
        [[sys.executable, "-c", DOWNLOAD_THEN_SAFE_OPEN_S3, f.s3["endpoint"], f.bucket, "bench.safetensors", dl]],
        env=f.env,
    )
    return results


def report(results, size):
    ratio_table(results, size, f"1 safetensors file of {size / (1 << 30):.2f} GiB (256 F32 tensors); every tensor read")


if __name__ == "__main__":
    main()
