"""save benchmark: a 1 GiB checkpoint (256 F32 tensors of 4 MiB, read from a local safetensors
file) saved as a ckptio checkpoint to local disk (tmpfs) and to S3 (Garage and SeaweedFS), and
the same file uploaded as it is by `ckptio cp`, against `s5cmd cp` uploading it and Python's
`safetensors.save_file` (+ boto3 `upload_file` for S3). Run through `scripts/bench save`.
Every run saves tensors no run saved before. Reports medians, ratios (against the target's
first ckptio row) and peak RSS (GNU time's %M per process)."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import case, ratio_table, s3_servers

WRITE = """
import sys, numpy as np
from safetensors.numpy import save_file
n, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
save_file({f"layers.{i}.weight": rng.standard_normal(1 << 20, dtype=np.float32) for i in range(n)}, path)
"""

SAVE_FILE = """
import sys
from safetensors.numpy import load_file, save_file
src, dst = sys.argv[1], sys.argv[2]
save_file(load_file(src), dst)
"""

SAVE_FILE_THEN_BOTO3 = """
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
from safetensors.numpy import load_file, save_file
src, tmp, endpoint, bucket, key = sys.argv[1:6]
save_file(load_file(src), tmp)
boto3.client("s3", endpoint_url=endpoint).upload_file(tmp, bucket, key,
    Config=TransferConfig(max_concurrency=8, multipart_chunksize=16 << 20))
os.unlink(tmp)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckptio", required=True)
    ap.add_argument("--tmpfs", default="/dev/shm")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="ckptio-bench-save-", dir=args.tmpfs)
    try:
        src = os.path.join(work, "src.safetensors")
        print("bench: writing the 1 GiB source with Python's safetensors", file=sys.stderr)
        subprocess.run([sys.executable, "-c", WRITE, "256", src], check=True)
        size = os.path.getsize(src)
        results = run_cases(args, src, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, size)


def stamp(path):
    """Makes every 512 KiB of the source's tensor data new: S3 servers that keep each distinct
    block once (Garage) skip storing bytes they already hold, which a training run's next
    checkpoint never lets them do."""
    tag = os.urandom(8)
    with open(path, "r+b") as f:
        header = 8 + int.from_bytes(f.read(8), "little")
        size = os.fstat(f.fileno()).st_size
        for at in range(header, size - 16, 512 << 10):
            f.seek(at)
            f.write(tag + at.to_bytes(8, "little"))


def fresh(template):
    """A command that writes to a new destination each run (ckptio refuses to overwrite a
    committed checkpoint)."""
    return ["sh", "-c", template.replace("{n}", "$(date +%s%N)")]


def run_cases(args, src, work):
    results, runs, py = [], args.runs, sys.executable

    def clean(**_):
        subprocess.run(["sh", "-c", f"rm -rf {work}/out-*"], check=True)

    def new_bytes(before):
        if before:
            stamp(src)

    case(
        results,
        runs,
        "ckptio convert --to ckptio",
        "local",
        "",
        [fresh(f"{args.ckptio} convert -q {src} {work}/out-{{n}}")],
        check=clean,
    )
    case(
        results,
        runs,
        "safetensors.save_file",
        "local",
        "",
        [fresh(f"{py} -c '{SAVE_FILE}' {src} {work}/out-{{n}}.st")],
        check=clean,
    )
    case(results, runs, "cp (one file, the ceiling)", "local", "", [fresh(f"cp {src} {work}/out-{{n}}")], check=clean)
    for target, s3, bucket, s3_env in s3_servers():
        ep = s3["endpoint"]
        case(
            results,
            runs,
            "ckptio convert --to ckptio",
            target,
            "",
            [
                fresh(
                    f"{args.ckptio} convert -q {src} s3://{bucket}/save-{{n}}/ --dst-option endpoint={ep} "
                    "--dst-option allow_http=true"
                )
            ],
            env=s3_env,
            check=new_bytes,
        )
        case(
            results,
            runs,
            "ckptio cp (one file)",
            target,
            "",
            [
                fresh(
                    f"{args.ckptio} cp -q {src} s3://{bucket}/ckptio-cp-{{n}}.safetensors --dst-option endpoint={ep} "
                    "--dst-option allow_http=true"
                )
            ],
            env=s3_env,
            check=new_bytes,
        )
        case(
            results,
            runs,
            "s5cmd cp (one file)",
            target,
            "",
            [fresh(f"s5cmd --endpoint-url {ep} cp {src} s3://{bucket}/s5cmd-{{n}}.safetensors")],
            env=s3_env,
            check=new_bytes,
        )
        case(
            results,
            runs,
            "save_file + boto3 upload",
            target,
            "",
            [
                fresh(
                    f"{py} -c '{SAVE_FILE_THEN_BOTO3}' {src} {work}/tmp-{{n}}.st {ep} {bucket} boto3-{{n}}.safetensors"
                )
            ],
            env=s3_env,
            check=new_bytes,
            optional=True,
        )
    return results


def report(results, size):
    ratio_table(
        results,
        size,
        f"Saving {size / (1 << 30):.2f} GiB (256 F32 tensors) read from local safetensors",
        ratio="this ÷ ckptio",
    )


if __name__ == "__main__":
    main()
