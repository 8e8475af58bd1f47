"""What the benchmarks share: running commands and measuring wall time and peak RSS."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


def measure(cmds, env=None):
    """Runs the commands in parallel; returns (wall seconds, peak RSS bytes of any one).

    Each runs under GNU time, whose %M is the command's own peak RSS: a child forked from this
    (much larger) Python process would report Python's memory as its own."""
    with tempfile.TemporaryDirectory(prefix="ckptio-rss-") as rss_dir:
        rss_files = [os.path.join(rss_dir, str(i)) for i in range(len(cmds))]
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["/usr/bin/time", "-f", "%M", "-o", f, *c], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for c, f in zip(cmds, rss_files, strict=True)
        ]
        errors = [p.communicate()[1].decode(errors="replace") for p in procs]
        elapsed = time.perf_counter() - start
        peak = 0
        for p, err, f in zip(procs, errors, rss_files, strict=True):
            if p.returncode != 0:
                sys.exit(f"bench: {' '.join(cmds[0])} failed ({p.returncode}): {err}")
            with open(f) as rss:
                peak = max(peak, int(rss.read().split()[-1]) * 1024)
    return elapsed, peak


def case(results, runs, label, target, sink, cmds, env=None, check=None, optional=False):
    """Runs `cmds` (in parallel) `runs` times and appends a row with the median wall time and
    the peak RSS. An `optional` case is a peer that may fail against a given server: its
    failure is reported and leaves no row, where any other failure ends the bench."""
    interleaved(results, runs, [Case(label, target, sink, cmds, env, check, optional)])


@dataclass
class Case:
    """One row of a table: `cmds` run in parallel, timed together. `check(before=...)` runs
    around each run, outside its time (to clear a destination, then check it)."""

    label: str
    target: str
    sink: str
    cmds: list
    env: dict | None = None
    check: Callable | None = None
    optional: bool = False


def interleaved(results, runs, cases):
    """Runs every case once per round, `runs` rounds, each round starting with the next case,
    so that a host that speeds up or slows down meanwhile moves every case alike, and no case
    always runs after the same one; appends a row per case (as `case` does), in their order."""
    samples = [([], []) for _ in cases]
    running = set(range(len(cases)))
    for i in in_rounds(len(cases), runs, running):
        c = cases[i]
        if c.check:
            c.check(before=True)
        try:
            t, r = measure(c.cmds, c.env)
        except SystemExit as e:
            skip(e, c.label, c.target, c.optional)
            running.discard(i)
            continue
        if c.check:
            c.check(before=False)
        samples[i][0].append(t)
        samples[i][1].append(r)
    for i in sorted(running):
        (times, rss), c = samples[i], cases[i]
        results.append(
            {
                "tool": c.label,
                "target": c.target,
                "sink": c.sink,
                "median_s": statistics.median(times),
                "runs_s": times,
                "peak_rss": max(rss),
            }
        )
        print(f"  {c.target:5} {c.label:28} {c.sink:12} {statistics.median(times):7.3f} s", file=sys.stderr)


def server_pid(name):
    """The process id of the server NAME (`garage`, `seaweedfs`, `nginx`) that `scripts/bench`
    started, or None when the bench runs against servers it did not start."""
    state = os.environ.get("CKPTIO_BENCH_SERVERS")
    try:
        with open(os.path.join(state, f"{name}.pid")) as f:
            return int(f.read())
    except (TypeError, OSError, ValueError):
        return None


def cpu_seconds(pid):
    """CPU-seconds (user and system, every thread) process `pid` has used so far, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The fields after the command's closing parenthesis start at the third (state);
            # utime and stime are the 14th and 15th.
            fields = f.read().rsplit(")", 1)[1].split()
    except (TypeError, OSError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def garage():
    """The Garage server `scripts/servers` started: (its store options, the bucket, an
    environment for the AWS peers)."""
    return s3_server("GARAGE")


def s3_servers():
    """Every S3 server `scripts/bench` started, as (row label, options, bucket, environment):
    Garage, then SeaweedFS."""
    return [
        (label, *s3_server(name))
        for label, name in (("S3", "GARAGE"), ("S3 SeaweedFS", "SEAWEEDFS"))
        if f"CKPTIO_TEST_{name}_OPTIONS" in os.environ
    ]


def s3_server(name):
    """The S3 server NAME (`GARAGE`, `SEAWEEDFS`): (its store options, the bucket, an environment
    for the AWS peers)."""
    s3 = json.loads(os.environ[f"CKPTIO_TEST_{name}_OPTIONS"])
    bucket = os.environ[f"CKPTIO_TEST_{name}_URI"].removeprefix("s3://").strip("/")
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=s3["access_key_id"],
        AWS_SECRET_ACCESS_KEY=s3["secret_access_key"],
        AWS_REGION=s3["region"],
        AWS_DEFAULT_REGION=s3["region"],
        AWS_ENDPOINT_URL=s3["endpoint"],
        AWS_ALLOW_HTTP="true",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return s3, bucket, env


def format_args(*required):
    """The arguments of a format bench: --runs, --materialize (the example that reads every
    tensor), --tmpfs (where downloads land), and each of `required` (`--jax-python`)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--materialize", required=True)
    for flag in required:
        ap.add_argument(flag, required=True)
    ap.add_argument("--tmpfs", default="/dev/shm")
    return ap.parse_args()


@dataclass
class Served:
    """A bench's file, served three ways: from local disk, by nginx and by Garage."""

    local: str
    url: str
    s3_uri: str
    s3: dict
    bucket: str
    env: dict
    size: int


def served(name, write, what):
    """Writes the file `name` into nginx's root with the script `write` (run by this Python
    with the tensor count, 256, and the path), and uploads it to Garage."""
    local = os.path.join(os.environ["CKPTIO_TEST_HTTP_ROOT"], name)
    print(f"bench: writing {what}", file=sys.stderr)
    subprocess.run([sys.executable, "-c", write, "256", local], check=True)
    s3, bucket, env = garage()
    s3_uri = f"s3://{bucket}/{name}"
    upload(s3, env, local, s3_uri)
    url = os.environ["CKPTIO_TEST_HTTP_URI"] + name
    return Served(local, url, s3_uri, s3, bucket, env, os.path.getsize(local))


def upload(s3, env, source, uri):
    """Copies `source` (a file, or `dir/*`) to `uri` on the S3 server whose store options are
    `s3`, with s5cmd: how every bench puts its object on a server before timing reads of it."""
    subprocess.run(
        ["s5cmd", "--endpoint-url", s3["endpoint"], "cp", source, uri], env=env, check=True, stdout=subprocess.DEVNULL
    )


def ratio_table(results, size, title, ratio="ckptio × this"):
    """The table every read/write benchmark prints: each row's time against ckptio's for the
    same target (its time divided by that of the target's first ckptio row)."""
    runs = len(results[0]["runs_s"])
    print(f"\n{title}; median of {runs} runs\n")
    print(f"| target | tool | median s | GiB/s | {ratio} | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|")
    ours = {}
    for r in results:
        if r["tool"].startswith("ckptio"):
            ours.setdefault(r["target"], r["median_s"])
    for r in results:
        print(
            f"| {r['target']} | {r['tool']} | {r['median_s']:.3f} | {size / GiB / r['median_s']:.2f} | "
            f"{r['median_s'] / ours[r['target']]:.2f} | {r['peak_rss'] / MiB:.0f} |"
        )


def skip(err, label, target, optional):
    """Reports a failed optional peer, which then leaves no row; any other failure (`err`, from
    `measure`) ends the bench."""
    if not optional:
        raise err
    print(f"bench: {label} ({target}) did not run: {str(err)[:300]}", file=sys.stderr)


def in_rounds(count, runs, running):
    """The indexes of `count` cases in the order rounds run them: `runs` rounds of every case
    once, each round starting with the next (see `rotated`); a case the caller removes from the
    set `running` (it failed) is not run again."""
    for round_ in range(runs):
        for i in rotated(list(range(count)), round_):
            if i in running:
                yield i


def rotated(items, round_):
    """`items` in the order round `round_` runs them: each round starts with the next one, so
    that no item always runs first (after whatever ran before the rounds) or last."""
    k = round_ % len(items) if items else 0
    return items[k:] + items[:k]


def settle(idle=0.9, window=0.5, limit=30.0):
    """Writes dirty pages back, then waits until the machine's CPUs are at least `idle` idle
    over `window` seconds (for at most `limit` seconds): a run that follows one which wrote a
    GiB to a server's disk would otherwise share the two cores with the kernel writing it back,
    or with the server still indexing it."""
    os.sync()

    def ticks():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        idle0, total0 = ticks()
        time.sleep(window)
        idle1, total1 = ticks()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= idle:
            return
