"""`python -m ckptio URI`: what `ckptio inspect` shows, from Python."""

from __future__ import annotations

import argparse
import sys

import ckptio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ckptio", description="Show a checkpoint's tensors and metadata."
    )
    parser.add_argument("uri", help="a path or URI (file, s3, gs, az, http(s))")
    parser.add_argument("--select", action="append", help="only paths matching this glob")
    parser.add_argument("--ignore", action="append", help="hide paths matching this glob")
    args = parser.parse_args(argv)
    try:
        checkpoint = ckptio.open(args.uri, select=args.select, ignore=args.ignore)
    except (ckptio.Error, OSError, ValueError) as e:
        print(f"python -m ckptio: {e}", file=sys.stderr)
        return 1
    infos = {path: checkpoint.info(path) for path in checkpoint.keys()}
    total = sum(i.nbytes for i in infos.values())
    print(f"{checkpoint.uri}: {checkpoint.format}, {len(infos)} tensors, {total} bytes")
    for key, value in sorted(checkpoint.metadata.items()):
        print(f"  {key}: {value}")
    width = max((len(p) for p in infos), default=0)
    for path, info in infos.items():
        print(f"{path:{width}}  {info.dtype:<7} {list(info.shape)!s:<16} {info.nbytes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
