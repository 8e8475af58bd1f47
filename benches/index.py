"""Sharded-index benchmark: `ckptio inspect` of a safetensors model of many shards
(`model.safetensors.index.json` and 16 or 128 shards, 8 tensors each) on nginx and S3 (Garage),
against what a Python user does without ckptio to see the same thing: fetch each shard's header
with its own range requests (8-byte length, then the header), one shard after another, as
`huggingface_hub.get_safetensors_metadata` does, over one kept-alive connection (HTTP) or with boto3 (S3). The rows
matter through a real link: run `CKPTIO_BENCH_RTT_MS=20 scripts/bench index`, where the time is
round trips, and ckptio reads every shard's header at once. Reports medians and requests."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import case, garage, upload

SHARDS = (16, 128)

WRITE = """
import json, os, sys, numpy as np
from safetensors.numpy import save_file
shards, root = int(sys.argv[1]), sys.argv[2]
os.makedirs(root, exist_ok=True)
weight_map = {}
for s in range(shards):
    name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    tensors = {f"layers.{s}.{k}.weight": np.full((64, 64), s, dtype=np.float32) for k in range(8)}
    save_file(tensors, os.path.join(root, name))
    weight_map.update({t: name for t in tensors})
with open(os.path.join(root, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": shards * 8 * 64 * 64 * 4}, "weight_map": weight_map}, f)
"""

# Each shard's header, one shard after another: its length, then the header (what each Python
# case ends with, given `get(key, range)`).
READ_HEADERS = """
index = json.loads(get("model.safetensors.index.json", "bytes=0-"))
count = 0
for shard in sorted(set(index["weight_map"].values())):
    n = struct.unpack("<Q", get(shard, "bytes=0-7"))[0]
    header = json.loads(get(shard, f"bytes=8-{7 + n}"))
    count += len(header) - ("__metadata__" in header)
print(count)
"""

# Over one kept-alive connection.
HEADERS_HTTP = (
    """
import http.client, json, struct, sys, urllib.parse
base = urllib.parse.urlparse(sys.argv[1])
conn = http.client.HTTPConnection(base.netloc)
def get(key, r):
    conn.request("GET", base.path + key, headers={"Range": r})
    return conn.getresponse().read()
"""
    + READ_HEADERS
)

HEADERS_S3 = (
    """
import json, struct, sys, boto3
endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint)
get = lambda key, r: s3.get_object(Bucket=bucket, Key=prefix + key, Range=r)["Body"].read()
"""
    + READ_HEADERS
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckptio", required=True)
    args = ap.parse_args()
    http_base, http_root = os.environ["CKPTIO_TEST_HTTP_URI"], os.environ["CKPTIO_TEST_HTTP_ROOT"]
    s3, bucket, s3_env = garage()
    work = tempfile.mkdtemp(prefix="ckptio-bench-index-")
    results, stats = [], {}
    try:
        for shards in SHARDS:
            name = f"index-{shards}"
            root = os.path.join(http_root, name)
            subprocess.run([sys.executable, "-c", WRITE, str(shards), root], check=True)
            upload(s3, s3_env, root + "/*", f"s3://{bucket}/{name}/")
            http_index = f"{http_base}{name}/model.safetensors.index.json"
            s3_index = f"s3://{bucket}/{name}/model.safetensors.index.json"
            label = f"{shards} shards"
            case(results, args.runs, "ckptio inspect", f"HTTP {label}", "", [[args.ckptio, "inspect", http_index]])
            case(
                results,
                args.runs,
                "each header in turn (http.client)",
                f"HTTP {label}",
                "",
                [[sys.executable, "-c", HEADERS_HTTP, f"{http_base}{name}/"]],
            )
            case(
                results,
                args.runs,
                "ckptio inspect",
                f"S3 {label}",
                "",
                [[args.ckptio, "inspect", s3_index]],
                env=s3_env,
            )
            case(
                results,
                args.runs,
                "each header in turn (boto3)",
                f"S3 {label}",
                "",
                [[sys.executable, "-c", HEADERS_S3, s3["endpoint"], bucket, f"{name}/"]],
                env=s3_env,
            )
            for target, uri, env in ((f"HTTP {label}", http_index, None), (f"S3 {label}", s3_index, s3_env)):
                out = subprocess.run(
                    [args.ckptio, "inspect", "--stats", uri], env=env, check=True, capture_output=True, text=True
                )
                stats[target] = out.stderr.strip().splitlines()[-1]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    link = os.environ.get("CKPTIO_BENCH_RTT_MS")
    print(
        f"\n`inspect` of a sharded safetensors index (8 tensors per shard); "
        f"{f'{link} ms round trip' if link else 'loopback'}; median of {args.runs} runs\n"
    )
    print("| target | tool | median s | ckptio × this | ckptio's requests |")
    print("|---|---|---:|---:|---|")
    ours = {r["target"]: r["median_s"] for r in results if r["tool"].startswith("ckptio")}
    for r in results:
        cost = stats[r["target"]] if r["tool"].startswith("ckptio") else ""
        print(
            f"| {r['target']} | {r['tool']} | {r['median_s']:.3f} | {r['median_s'] / ours[r['target']]:.2f} | {cost} |"
        )


if __name__ == "__main__":
    main()
