"""torch.distributed.checkpoint benchmark: 2 gloo ranks on the CPU save 1 GiB (512 MiB each,
64 F32 tensors of 8 MiB per rank) to S3 (Garage) and load it back, with ckptio's storage
writer/reader, s3torchconnector's and torch's fsspec ones (s3fs); and the server's ceiling, two
s5cmd processes moving as many bytes between tmpfs files and the bucket. Each run is a fresh
pair of processes saving tensors no run saved before; after one untimed run that warms the
server, --runs rounds run every tool once each; the table has the medians, GiB/s, each row's
time against ckptio's, the peak RSS of a rank, and the CPU-seconds each phase cost the clients
and Garage (whose pid `scripts/bench` names). Run through `scripts/bench dcp`."""

import argparse
import itertools
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid

from common import cpu_seconds, garage, in_rounds, server_pid, settle

GiB = 1 << 30
MiB = 1 << 20
TENSORS, TENSOR_BYTES = 64, 8 * MiB

RANK = r"""
import json, os, resource, sys, time, uuid
import torch, torch.distributed as dist, torch.multiprocessing as mp
import torch.distributed.checkpoint as dcp
sys.path.append({benches!r})
from common import cpu_seconds

TENSORS, TENSOR_BYTES = {tensors}, {tensor_bytes}

def writer_reader(tool, path, s3):
    if tool == "ckptio":
        from ckptio.dcp import CkptioStorageReader, CkptioStorageWriter
        opts = {{k: s3[k] for k in ("endpoint", "access_key_id", "secret_access_key", "region")}}
        return CkptioStorageWriter(path, opts, thread_count=2), CkptioStorageReader(path, opts)
    if tool == "s3torchconnector":
        from s3torchconnector import S3ClientConfig
        from s3torchconnector._s3client import S3Client
        from s3torchconnector.dcp import S3StorageReader, S3StorageWriter
        from s3torchconnector.dcp.s3_file_system import S3FileSystem
        config = S3ClientConfig(force_path_style=True)
        client = S3Client(s3["region"], endpoint=s3["endpoint"], s3client_config=config)
        w = S3StorageWriter(s3["region"], path, s3client_config=config, thread_count=2)
        r = S3StorageReader(s3["region"], path, s3client_config=config)
        for x in (w, r):
            x.fs = S3FileSystem(s3["region"], s3_client=client)
        return w, r
    from torch.distributed.checkpoint import FsspecReader, FsspecWriter
    kw = dict(endpoint_url=s3["endpoint"], key=s3["access_key_id"], secret=s3["secret_access_key"],
              client_kwargs={{"region_name": s3["region"]}})
    return FsspecWriter(path, thread_count=2, sync_files=False, **kw), FsspecReader(path, **kw)

def own_cpu():
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime

def worker(rank, world, port, tool, path, s3, out, seed, server):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(seed * 2 + rank)
    state = {{f"rank{{rank}}.t{{i}}": torch.randn(TENSOR_BYTES // 4, generator=g) for i in range(TENSORS)}}
    want = {{k: v.clone() for k, v in state.items()}}
    writer, reader = writer_reader(tool, path, s3)
    # (time, this rank's CPU-seconds, the server's) once every rank is at the mark.
    marks = []
    def mark():
        dist.barrier()
        marks.append((time.perf_counter(), own_cpu(), cpu_seconds(server) if rank == 0 and server else None))
    mark()
    dcp.save(state, storage_writer=writer)
    mark()
    for v in state.values():
        v.zero_()
    mark()
    dcp.load(state, storage_reader=reader)
    mark()
    assert all(torch.equal(state[k], want[k]) for k in want), "loaded tensors differ"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mine = (rss, marks[1][1] - marks[0][1], marks[3][1] - marks[2][1])
    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    if rank == 0:
        def server_cpu(a, b):
            return None if marks[a][2] is None else marks[b][2] - marks[a][2]
        result = {{
            "save": marks[1][0] - marks[0][0],
            "load": marks[3][0] - marks[2][0],
            "rss": max(r[0] for r in ranks),
            "client_cpu": {{"save": sum(r[1] for r in ranks), "load": sum(r[2] for r in ranks)}},
            "server_cpu": {{"save": server_cpu(0, 1), "load": server_cpu(2, 3)}},
        }}
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()

if __name__ == "__main__":
    tool, path, s3, out, port = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    server = int(sys.argv[7]) if sys.argv[7] != "-" else None
    mp.spawn(worker, args=(2, port, tool, path, s3, out, int(sys.argv[6]), server), nprocs=2)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="ckptio,s3torchconnector,fsspec")
    ap.add_argument("--tensors", type=int, default=TENSORS, help="8 MiB tensors per rank")
    args = ap.parse_args()
    s3, bucket, env = garage()
    # A file, not `-c`: the ranks torch.multiprocessing spawns import their entry point from it.
    script = f"/tmp/ckptio-bench-dcp-{uuid.uuid4().hex[:8]}.py"
    with open(script, "w") as f:
        benches = os.path.dirname(os.path.abspath(__file__))
        f.write(RANK.format(tensors=args.tensors, tensor_bytes=TENSOR_BYTES, benches=benches))
    server = server_pid("garage")
    total = 2 * args.tensors * TENSOR_BYTES

    def run(tool):
        """One save and load by `tool`'s pair of ranks: their times and peak RSS, or None."""
        path = f"s3://{bucket}/bench-dcp/{tool}-{uuid.uuid4().hex[:8]}"
        out = f"/tmp/ckptio-bench-dcp-{uuid.uuid4().hex[:8]}.json"
        settle()
        done = subprocess.run(
            [
                sys.executable,
                script,
                tool,
                path,
                json.dumps(s3),
                out,
                str(free_port()),
                str(next(seeds)),
                str(server or "-"),
            ],
            check=False,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"bench: {tool} failed: {done.stderr[-2000:]}", file=sys.stderr)
            return None
        with open(out) as f:
            result = json.load(f)
        os.unlink(out)
        return result

    # Every run saves tensors of its own: Garage keeps each distinct block once, so a save of
    # bytes it already holds skips writing them (a third of its work), which a training run's
    # checkpoints never get. One untimed run first: the first save to a fresh Garage is slower
    # whichever tool makes it.
    seeds = itertools.count()
    tools = args.tools.split(",")
    warm = run(tools[0])
    if warm:
        print(
            f"  {tools[0]:18} save {warm['save']:6.2f} s  load {warm['load']:6.2f} s  (warm-up, not counted)",
            file=sys.stderr,
        )
    rows = [ceiling(total, bucket, s3, env, args.runs, server)]
    # Rounds, as every bench's cases: a host that speeds up or slows down moves every tool alike.
    samples = [[] for _ in tools]
    running = set(range(len(tools)))
    for i in in_rounds(len(tools), args.runs, running):
        result = run(tools[i])
        if result is None:
            running.discard(i)
            continue
        samples[i].append(result)
        print(f"  {tools[i]:18} save {result['save']:6.2f} s  load {result['load']:6.2f} s", file=sys.stderr)
    for tool, done in zip(tools, samples, strict=True):
        rows.extend(row(tool, done))
    os.unlink(script)
    report(rows, total)


def row(tool, runs):
    """The table's row for `tool` (medians over its runs), or none when no run finished."""
    if not runs:
        return []
    return [
        {
            "tool": tool,
            "save": statistics.median(r["save"] for r in runs),
            "load": statistics.median(r["load"] for r in runs),
            "rss": max(r["rss"] for r in runs),
            "runs": len(runs),
            **{
                k: {phase: median_of([r[k][phase] for r in runs]) for phase in ("save", "load")}
                for k in ("client_cpu", "server_cpu")
            },
        }
    ]


def ceiling(total, bucket, s3, env, runs, server):
    """The server's own ceiling: two s5cmd processes (as two ranks) upload and download half
    of the bytes each, from and to tmpfs files."""
    tmp = f"/dev/shm/ckptio-bench-dcp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    halves = [os.path.join(tmp, f"rank{r}.bin") for r in range(2)]
    cmd = ["s5cmd", "--endpoint-url", s3["endpoint"]]
    times = {"save": [], "load": []}
    cpu = {"client_cpu": {"save": [], "load": []}, "server_cpu": {"save": [], "load": []}}
    try:
        for _ in range(runs):
            for path in halves:  # new bytes each run, as for the ranks
                with open(path, "wb") as f:
                    f.write(os.urandom(total // 2))
            prefix = f"s3://{bucket}/bench-dcp/s5cmd-{uuid.uuid4().hex[:8]}"
            for phase in ("save", "load"):
                jobs = [
                    [*cmd, "cp", p, f"{prefix}/{os.path.basename(p)}"]
                    if phase == "save"
                    else [*cmd, "cp", f"{prefix}/{os.path.basename(p)}", p + ".back"]
                    for p in halves
                ]
                settle()
                start, clients, served = time.perf_counter(), children_cpu(), cpu_seconds(server)
                procs = [subprocess.Popen(j, env=env, stdout=subprocess.DEVNULL) for j in jobs]
                if any(p.wait() for p in procs):
                    raise SystemExit("bench: s5cmd failed")
                times[phase].append(time.perf_counter() - start)
                cpu["client_cpu"][phase].append(children_cpu() - clients)
                now = cpu_seconds(server)
                cpu["server_cpu"][phase].append(None if now is None or served is None else now - served)
    finally:
        subprocess.run(["rm", "-rf", tmp], check=False)
    print(
        f"  {'s5cmd (ceiling)':18} save {statistics.median(times['save']):6.2f} s  "
        f"load {statistics.median(times['load']):6.2f} s",
        file=sys.stderr,
    )
    return {
        "tool": "s5cmd cp, 2 processes (ceiling)",
        "save": statistics.median(times["save"]),
        "load": statistics.median(times["load"]),
        "rss": 0,
        "runs": runs,
        **{k: {phase: median_of(v[phase]) for phase in v} for k, v in cpu.items()},
    }


def children_cpu():
    """CPU-seconds this process's waited-for children have used so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def median_of(values):
    """The median of `values`, or None when any is unknown."""
    return None if not values or None in values else statistics.median(values)


def report(rows, total):
    print(
        f"\ntorch.distributed.checkpoint, 2 ranks (gloo, CPU), {total / GiB:.0f} GiB to S3 (Garage); "
        f"median of {rows[0]['runs'] if rows else 0}; CPU-seconds of the clients (both ranks, every "
        "thread) and of Garage over each phase\n"
    )
    print(
        "| tool | save s | save GiB/s | load s | load GiB/s | this ÷ ckptio (save / load) | peak RSS of a rank MiB "
        "| client CPU-s (save / load) | Garage CPU-s (save / load) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ours = next((r for r in rows if r["tool"] == "ckptio"), None)
    for r in rows:
        ratio = f"{r['save'] / ours['save']:.2f} / {r['load'] / ours['load']:.2f}" if ours else ""
        rss = f"{r['rss'] / MiB:.0f}" if r["rss"] else "—"
        print(
            f"| {r['tool']} | {r['save']:.2f} | {total / GiB / r['save']:.2f} | {r['load']:.2f} | "
            f"{total / GiB / r['load']:.2f} | {ratio} | {rss} | {pair(r['client_cpu'])} | {pair(r['server_cpu'])} |"
        )


def pair(cpu):
    """`save / load` CPU-seconds, with a dash for what was not measured."""
    return " / ".join("—" if cpu[phase] is None else f"{cpu[phase]:.1f}" for phase in ("save", "load"))


if __name__ == "__main__":
    main()
