"""Lightning and Fabric: a `CheckpointIO` plugin that saves checkpoints to any URI ckptio
writes and loads them lazily from any URI it reads.

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from ckptio.lightning import CkptioCheckpointIO

    io = CkptioCheckpointIO({"endpoint": "http://127.0.0.1:9000"})
    trainer = Trainer(plugins=[io], callbacks=[ModelCheckpoint(dirpath="s3://bucket/run/")])
    trainer.fit(model, ckpt_path="last")

    fabric = Fabric(plugins=[io])
    fabric.save("s3://bucket/run/step-100.ckpt", {"model": model, "optimizer": optimizer})

Each checkpoint is one `torch.save` file (see `save_checkpoint`): `torch.load` reads it without
ckptio, Lightning's `ckpt_path="last"` and `ModelCheckpoint`'s bookkeeping (which go through
fsspec: install `s3fs` for S3, `gcsfs` for GCS) see ordinary files, and a file is written as
one object, so it appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

import ckptio
from ckptio._api import Progress


class CkptioCheckpointIO(CheckpointIO):
    """Saves and loads Lightning and Fabric checkpoints through ckptio.

    `storage_options` apply to every path (an `endpoint`, credentials, ...; the environment's
    `AWS_*`, `GOOGLE_*`, `AZURE_*` apply too); those Lightning passes to `save_checkpoint`
    override them. `memory_budget` bounds the bytes read ahead while loading; `progress` is
    `True` for tqdm bars or a callable given `(done, total)` bytes, for saves and loads.
    """

    def __init__(
        self,
        storage_options: Mapping[str, Any] | None = None,
        *,
        memory_budget: int = 64 << 20,
        progress: Progress = None,
    ) -> None:
        self.storage_options = dict(storage_options or {})
        self.memory_budget = memory_budget
        self.progress = progress

    def _options(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        merged = {**self.storage_options, **(extra or {})}
        return merged or None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Writes `checkpoint` to `path` (any URI) as one `torch.save` file.

        Tensors are streamed from their own memory into a multipart upload (no copy of the
        checkpoint is made), and the upload is completed only once every byte is written: a
        reader, `ckpt_path="last"` or a crash never sees half a file, and the file that was at
        `path` stays until then. Objects other than tensors, containers, numbers, strings and
        bytes (a custom class in `hyper_parameters`, say) raise `TypeError` naming their path.
        """
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise TypeError(
                f"storage_options must be a dict of store options, not {type(storage_options)}"
            )
        ckptio.save(
            str(path),
            checkpoint,
            self._options(storage_options),
            format="torch",
            memory_budget=self.memory_budget,
            progress=self.progress,
        )

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Reads the checkpoint at `path` (any URI and any format ckptio reads: a file this
        plugin wrote, a plain Lightning `.ckpt`, a DCP or ckptio directory), tensors fetched in
        parallel ranges.

        Nothing in the file is ever executed. `weights_only=True` means what it means to
        `torch.load`: objects of classes other than plain data and tensors are refused
        (`ckptio.UnsafeError` naming the class); otherwise they come back as inert
        `ckptio.Opaque` placeholders. `map_location` is `torch.load`'s.
        """
        loaded: dict[str, Any] = ckptio.load(
            str(path),
            self._options(),
            map_location=map_location,
            framework="pt",
            strict=bool(weights_only),
            progress=self.progress,
        )
        return loaded

    def remove_checkpoint(self, path: Any) -> None:
        """Removes the checkpoint at `path`: a file, or a checkpoint directory (its commit
        marker first, so a half-removed checkpoint is never taken for a whole one). A path
        that is already gone is not an error."""
        with contextlib.suppress(FileNotFoundError):
            ckptio.rm(str(path), self._options())

    def latest(self, dirpath: str, pattern: str = r"^last(-v\d+)?\.ckpt$") -> str | None:
        """The newest checkpoint file directly under `dirpath` whose name matches `pattern`
        (Lightning's `last.ckpt` by default), or `None`: what `ckpt_path="last"` finds, for
        stores fsspec cannot list."""
        found = _matching(dirpath, pattern, self._options())
        return found[-1] if found else None


def _matching(dirpath: str, pattern: str, options: dict[str, Any] | None) -> list[str]:
    """Files directly under `dirpath` matching `pattern`, oldest first."""
    base = dirpath.rstrip("/") + "/"
    try:
        names = ckptio.walk(base, options)
    except FileNotFoundError:
        return []
    regex = re.compile(pattern)
    found = []
    for name in names:
        if "/" in name or not regex.search(name):
            continue
        modified = ckptio.stat(base + name, options).get("last_modified") or ""
        found.append((modified, base + name))
    return [uri for _, uri in sorted(found)]


__all__ = ["CkptioCheckpointIO"]
