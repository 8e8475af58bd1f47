"""Download benchmark: ckptio against the raw ceiling and peer tools, in one run, on one machine.

Run through `scripts/bench`, which installs the tools, starts nginx, Garage and SeaweedFS on
127.0.0.1 and exports their CKPTIO_TEST_* variables. Every case downloads the same object, a
server's cases in rounds (each case once per round, each round starting with the next case, so
that a host that speeds up or slows down moves them alike). The table reports the median of
--runs runs, throughput, the ratio to the ceiling (16 parallel `curl -r` ranges to /dev/null
over HTTP) and ckptio's ratio to each peer, and the peak RSS of each process (from wait4, so a
tool's own children are excluded unless it waits for them).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import Case, GiB, MiB, case, garage, interleaved, s3_servers

# ckptio's default, given to every tool that takes one (the ceiling is as many curls).
CONCURRENCY = 16
CHUNK = 16 * MiB
# What s5cmd asks for when not told: 5 ranges of 50 MiB at a time.
S5CMD_CONCURRENCY = 5
S5CMD_PART = 50 * MiB
SWEEP_CONCURRENCY = (8, 16, 32, 64)
SWEEP_CHUNK = (4 * MiB, 8 * MiB, 16 * MiB)


def file_check(path, size):
    def check(before):
        if before:
            if os.path.exists(path):
                os.unlink(path)
        elif os.path.getsize(path) != size:
            sys.exit(f"bench: {path} has {os.path.getsize(path)} bytes, expected {size}")

    return check


def s3_cases(args, target, s3, bucket, s3_env, name, out, check):
    """ckptio and the S3 peers downloading the object from one S3 server."""
    s3_uri = f"s3://{bucket}/{name}"

    def to_file(label, cmd):
        return Case(label, target, "tmpfs file", [cmd], env=s3_env, check=check)

    s5cmd = ["s5cmd", "--endpoint-url", s3["endpoint"], "cp"]
    boto = (
        "import boto3; from boto3.s3.transfer import TransferConfig; "
        f"boto3.client('s3', endpoint_url={s3['endpoint']!r}).download_file({bucket!r}, {name!r}, {out!r}, "
        f"Config=TransferConfig(max_concurrency={CONCURRENCY}, multipart_chunksize={CHUNK}))"
    )
    return [
        Case("ckptio get", target, "memory", [[args.get_memory, s3_uri, str(CONCURRENCY), str(CHUNK)]], env=s3_env),
        to_file("ckptio get", [args.ckptio, "-q", "get", s3_uri, out]),
        to_file(
            f"s5cmd cp (-c {CONCURRENCY} -p {CHUNK // MiB})",
            [*s5cmd, "-c", str(CONCURRENCY), "-p", str(CHUNK // MiB), s3_uri, out],
        ),
        to_file("s5cmd cp (defaults)", [*s5cmd, s3_uri, out]),
        # s5cmd's defaults, 5 ranges of 50 MiB at a time, given to ckptio: which of the last
        # two rows' difference is the client, and which the settings.
        to_file(
            f"ckptio get (s5cmd's -c {S5CMD_CONCURRENCY} -p {S5CMD_PART // MiB})",
            [
                args.ckptio,
                "-q",
                "get",
                "--concurrency",
                str(S5CMD_CONCURRENCY),
                "--chunk-size",
                f"{S5CMD_PART // MiB}MiB",
                s3_uri,
                out,
            ],
        ),
        to_file("boto3 download_file", [sys.executable, "-c", boto]),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=GiB)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckptio", required=True)
    ap.add_argument("--get-memory", required=True)
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument(
        "--sweep", action="store_true", help="also time ckptio get into memory at several concurrencies and chunk sizes"
    )
    args = ap.parse_args()

    http_base = os.environ["CKPTIO_TEST_HTTP_URI"]
    http_root = os.environ["CKPTIO_TEST_HTTP_ROOT"]
    _, bucket, s3_env = garage()
    size = args.size
    name = "bench-object.bin"

    print(f"bench: writing a {size / GiB:.2f} GiB random object", file=sys.stderr)
    src = os.path.join(http_root, name)
    with open(src, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n
    url = http_base + name
    s3_uri = f"s3://{bucket}/{name}"
    for _, server, server_bucket, server_env in s3_servers():
        subprocess.run(
            ["s5cmd", "--endpoint-url", server["endpoint"], "cp", src, f"s3://{server_bucket}/{name}"],
            env=server_env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    out_dir = tempfile.mkdtemp(prefix="ckptio-bench-", dir=args.tmpfs)
    out = os.path.join(out_dir, "out.bin")
    check = file_check(out, size)
    results = []
    ranges = [(i * size // CONCURRENCY, (i + 1) * size // CONCURRENCY - 1) for i in range(CONCURRENCY)]
    runs = args.runs
    print(f"bench: measuring (median of {runs} runs)", file=sys.stderr)
    try:
        parts = [os.path.join(out_dir, f"part{i}") for i in range(CONCURRENCY)]

        def no_parts(before):
            for p in parts:
                if os.path.exists(p):
                    os.unlink(p)

        hf = (
            f"import hf_transfer; hf_transfer.download(url={url!r}, filename={out!r}, "
            f"max_files={CONCURRENCY}, chunk_size={CHUNK})"
        )
        http = [
            Case(
                f"curl x{CONCURRENCY} ranges (ceiling)",
                "HTTP",
                "/dev/null",
                [["curl", "-sf", "-r", f"{a}-{b}", "-o", "/dev/null", url] for a, b in ranges],
            ),
            Case("curl (single stream)", "HTTP", "/dev/null", [["curl", "-sf", "-o", "/dev/null", url]]),
            Case(
                f"curl x{CONCURRENCY} ranges (tmpfs ceiling)",
                "HTTP",
                "tmpfs files",
                [["curl", "-sf", "-r", f"{a}-{b}", "-o", p, url] for (a, b), p in zip(ranges, parts, strict=True)],
                check=no_parts,
            ),
            Case("ckptio get", "HTTP", "memory", [[args.get_memory, url, str(CONCURRENCY), str(CHUNK)]]),
            Case(
                "ckptio get (huge pages)",
                "HTTP",
                "memory",
                [[args.get_memory, "--huge-pages", url, str(CONCURRENCY), str(CHUNK)]],
            ),
            Case("ckptio get", "HTTP", "tmpfs file", [[args.ckptio, "-q", "get", url, out]], check=check),
            Case("hf_transfer.download", "HTTP", "tmpfs file", [[sys.executable, "-c", hf]], check=check),
        ]
        interleaved(results, runs, http)
        for target, server, server_bucket, server_env in s3_servers():
            interleaved(results, runs, s3_cases(args, target, server, server_bucket, server_env, name, out, check))
        sweep = []
        if args.sweep:
            for target, uri, env in (("HTTP", url, None), ("S3", s3_uri, s3_env)):
                for concurrency in SWEEP_CONCURRENCY:
                    for chunk in SWEEP_CHUNK:
                        case(
                            sweep,
                            runs,
                            f"ckptio get c={concurrency} chunk={chunk // MiB} MiB",
                            target,
                            "memory",
                            [[args.get_memory, uri, str(concurrency), str(chunk)]],
                            env=env,
                        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    report(results, size)
    if sweep:
        report_sweep(sweep, size)


def report(results, size):
    ceiling = next(r for r in results if "(ceiling)" in r["tool"])["median_s"]
    peers = {}
    for r in results:
        if not r["tool"].startswith("ckptio"):
            peers.setdefault(r["target"], []).append(r)
    print(
        f"\n1 object of {size / GiB:.2f} GiB on 127.0.0.1; {os.cpu_count()} cores; median of runs; "
        f"ckptio with concurrency {CONCURRENCY}, chunk {CHUNK // MiB} MiB\n"
    )
    print("| target | tool | sink | median s | GiB/s | × ceiling | peak RSS MiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        gibs = size / GiB / r["median_s"]
        print(
            f"| {r['target']} | {r['tool']} | {r['sink']} | {r['median_s']:.3f} | {gibs:.2f} | "
            f"{ceiling / r['median_s']:.2f} | {r['peak_rss'] / MiB:.0f} |"
        )
    print("\nckptio against each peer on the same server (speed ratio, > 1 is faster):\n")
    print("| target | ckptio | peer | ratio |")
    print("|---|---|---|---:|")
    for r in results:
        if not r["tool"].startswith("ckptio"):
            continue
        for p in peers[r["target"]]:
            ours = f"{r['tool'].removeprefix('ckptio get').strip() or 'get'} → {r['sink']}"
            print(f"| {r['target']} | {ours} | {p['tool']} ({p['sink']}) | {p['median_s'] / r['median_s']:.2f} |")
    file_rss = max(r["peak_rss"] for r in results if r["tool"].startswith("ckptio") and r["sink"] == "tmpfs file")
    budget = 64 * MiB + CONCURRENCY * CHUNK
    print(
        f"\nckptio file-sink peak RSS {file_rss / MiB:.0f} MiB; budget 64 MiB + {CONCURRENCY} x {CHUNK // MiB} MiB "
        f"= {budget / MiB:.0f} MiB: {'within' if file_rss <= budget else 'OVER'}"
    )


def report_sweep(sweep, size):
    """GiB/s of ckptio get into memory by concurrency (rows) and chunk size (columns)."""
    print("\nckptio get into memory, GiB/s by concurrency and chunk size (peak RSS MiB):\n")
    for target in ("HTTP", "S3"):
        print(f"| {target} | " + " | ".join(f"chunk {c // MiB} MiB" for c in SWEEP_CHUNK) + " |")
        print("|---|" + "---:|" * len(SWEEP_CHUNK))
        for concurrency in SWEEP_CONCURRENCY:
            cells = []
            for chunk in SWEEP_CHUNK:
                r = next(
                    r
                    for r in sweep
                    if r["target"] == target and r["tool"] == f"ckptio get c={concurrency} chunk={chunk // MiB} MiB"
                )
                cells.append(f"{size / GiB / r['median_s']:.2f} ({r['peak_rss'] / MiB:.0f})")
            print(f"| concurrency {concurrency} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
