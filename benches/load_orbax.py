"""Orbax benchmark: every array of a 1 GiB Orbax checkpoint (256 F32 arrays of 4 MiB, written
by orbax-checkpoint's StandardCheckpointer: OCDBT, zarr v2, zstd) with ckptio (open + streaming
materialize) from local disk and S3 (Garage), against Orbax restoring it in Python
(`StandardCheckpointer().restore`, tensorstore underneath) locally and "download the directory
with s5cmd, then restore" for S3; then one array of the S3 copy (time and bytes moved).
Run through `scripts/bench orbax`. Reports medians, ratios and peak RSS (GNU time's %M)."""

import os
import shutil
import subprocess
import sys
import tempfile

from common import case, format_args, garage, ratio_table, upload

WRITE = """
import sys, numpy as np, orbax.checkpoint as ocp
n, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
state = {"params": {f"layer{i:03d}": rng.standard_normal(1 << 20, dtype=np.float32) for i in range(n)}}
ckptr = ocp.StandardCheckpointer()
ckptr.save(path, state)
ckptr.wait_until_finished()
"""

# Touches every array's bytes (restore hands back numpy arrays; the sum reads each once).
RESTORE = """
import sys, numpy as np, orbax.checkpoint as ocp
state = ocp.StandardCheckpointer().restore(sys.argv[1])
print(sum(np.asarray(a).nbytes for a in state["params"].values()))
"""

# The server's ceiling: the same bytes downloaded to tmpfs and not decoded.
DOWNLOAD = ["s5cmd", "--endpoint-url"]

DOWNLOAD_THEN_RESTORE = """
import os, subprocess, sys, numpy as np, orbax.checkpoint as ocp
endpoint, src, dest = sys.argv[1:4]
subprocess.run(["s5cmd", "--endpoint-url", endpoint, "cp", src + "*", dest + "/"], check=True,
               stdout=subprocess.DEVNULL)
state = ocp.StandardCheckpointer().restore(dest)
print(sum(np.asarray(a).nbytes for a in state["params"].values()))
"""


def main():
    args = format_args("--jax-python")

    s3, bucket, s3_env = garage()
    work = tempfile.mkdtemp(prefix="ckptio-bench-orbax-")
    local = os.path.join(work, "ckpt")
    try:
        print("bench: writing a 1 GiB Orbax checkpoint (256 F32 arrays of 4 MiB)", file=sys.stderr)
        subprocess.run([args.jax_python, "-c", WRITE, "256", local], check=True)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(local) for f in fs)
        upload(s3, s3_env, local + "/*", f"s3://{bucket}/orbax/")
        results = run_cases(args, local, bucket, s3, s3_env)
        one = one_array(args, f"s3://{bucket}/orbax/", s3_env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, size, one)


def run_cases(args, local, bucket, s3, s3_env):
    results, runs = [], args.runs
    jax = args.jax_python
    case(results, runs, "ckptio stream", "local", "", [[args.materialize, local]])
    case(results, runs, "orbax restore", "local", "", [[jax, "-c", RESTORE, local]])
    case(results, runs, "ckptio stream", "S3", "", [[args.materialize, f"s3://{bucket}/orbax/"]], env=s3_env)
    dest = tempfile.mkdtemp(prefix="ckptio-bench-dl-", dir=args.tmpfs)

    def fresh(before):
        shutil.rmtree(dest, ignore_errors=True)

    try:
        case(
            results,
            runs,
            "s5cmd download (ceiling)",
            "S3",
            "",
            [[*DOWNLOAD, s3["endpoint"], "cp", f"s3://{bucket}/orbax/*", dest + "/"]],
            env=s3_env,
            check=fresh,
        )
        case(
            results,
            runs,
            "s5cmd + orbax restore",
            "S3",
            "",
            [[jax, "-c", DOWNLOAD_THEN_RESTORE, s3["endpoint"], f"s3://{bucket}/orbax/", dest]],
            env=s3_env,
            check=fresh,
        )
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return results


def one_array(args, uri, s3_env):
    """One 4 MiB array of the S3 copy: time, requests and bytes moved."""
    timed = []
    glob = "params/layer100"
    case(timed, args.runs, "ckptio one array", "S3", "", [[args.materialize, uri, glob]], env=s3_env)
    out = subprocess.run([args.materialize, uri, glob], env=s3_env, check=True, capture_output=True, text=True).stdout
    return timed[0]["median_s"], out.split("moved ")[1].strip()


def report(results, size, one):
    ratio_table(results, size, f"1 Orbax checkpoint of {size / (1 << 30):.2f} GiB (256 F32 arrays); every array read")
    seconds, moved = one
    print("\nOne 4 MiB array (`params/layer100`) of the S3 copy:\n")
    print("| median s | moved |")
    print("|---:|---|")
    print(f"| {seconds:.3f} | {moved} |")


if __name__ == "__main__":
    main()
