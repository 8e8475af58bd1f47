"""`DefaultCheckpointer`: numbered checkpoint files saved by period and found again by index,
on any URI, over the library's checkpointer.

    from ckptio.checkpointer import DefaultCheckpointer

    ckpt = DefaultCheckpointer(save_dir="s3://bucket/run-1", load_dir="s3://bucket/run-1",
                               period=2, keep_last=3)
    state = ckpt.load() or {}                     # the greatest index under load_dir, or None
    for epoch in range(start, epochs):
        ...
        ckpt.save({"model": model.state_dict(), "epoch": epoch}, epoch, force=epoch == epochs - 1)

Each checkpoint is one `torch.save` file, `{file_prefix}{index}.{file_ext}`, written as one
object: it appears whole or not at all, so a save killed midway leaves nothing a later `load()`
could pick.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

import ckptio
from ckptio import _ckptio
from ckptio._api import _lend

log = logging.getLogger("ckptio.checkpointer")


class DefaultCheckpointer:
    """Saves checkpoints every `period` indices (epochs, say) under `save_dir` and loads the
    latest from `load_dir`, on any URI ckptio reads and writes.

    - `checkpoint`: when false, nothing is saved.
    - `save_dir`: where `save` writes `{file_prefix}{index}.{file_ext}`.
    - `model_state_save_dir`: where `save_model` writes `{file_prefix}_model{index}.{file_ext}`
      (nothing when `None`).
    - `load_dir`, `load_filename`: what `load` reads: that file under `load_dir`, or the file of
      the greatest index found under `load_dir`, searched recursively.
    - `file_prefix`, `file_ext`: the file names.
    - `period`: `save` writes when `index % period == 0`, or when forced.
    - `delete_existing_checkpoints`: remove the checkpoints under `save_dir` when constructed.
    - `keep_last`: after each save, keep only the last N checkpoints under `save_dir`.
    - `storage_options`: store options for every URI (`endpoint`, credentials, ...).
    """

    def __init__(
        self,
        save_dir: str = "checkpoints",
        *,
        model_state_save_dir: str | None = None,
        load_dir: str | None = None,
        load_filename: str | None = None,
        file_prefix: str = "model",
        file_ext: str = "pt",
        period: int = 1,
        checkpoint: bool = True,
        delete_existing_checkpoints: bool = False,
        keep_last: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if period < 1:
            raise ValueError(f"period must be at least 1, not {period}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, not {keep_last}")
        self.save_dir = save_dir
        self.model_state_save_dir = model_state_save_dir
        self.load_dir = load_dir
        self.load_filename = load_filename
        self.file_prefix = file_prefix
        self.file_ext = file_ext.lstrip(".")
        self.period = period
        self.checkpoint = checkpoint
        self.keep_last = keep_last
        self.storage_options = dict(storage_options) if storage_options else None
        self._checkpointer: _ckptio.Checkpointer | None = None
        if delete_existing_checkpoints:
            log.warning("deleting the checkpoints under %s", save_dir)
            self._saves.delete_existing()

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> DefaultCheckpointer:
        """A checkpointer from an arguments object with these fields as attributes (the
        `DefaultCheckpointerArguments` dataclass of the code this contract comes from);
        attributes it lacks keep their defaults."""
        names = [
            "save_dir",
            "model_state_save_dir",
            "load_dir",
            "load_filename",
            "file_prefix",
            "file_ext",
            "period",
            "checkpoint",
            "delete_existing_checkpoints",
            "keep_last",
            "storage_options",
        ]
        given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
        return cls(**{**given, **overrides})

    @property
    def _saves(self) -> _ckptio.Checkpointer:
        """The library's checkpointer over `save_dir`, made on first use (a checkpointer that
        only loads never resolves `save_dir`)."""
        if self._checkpointer is None:
            self._checkpointer = _ckptio.Checkpointer(
                self.save_dir,
                self.storage_options,
                prefix=self.file_prefix,
                period=self.period,
                keep_last=self.keep_last,
                extension=self.file_ext,
            )
        return self._checkpointer

    def save(self, state: Any, index: int, force: bool = False) -> str | None:
        """Saves `state` (a dict, or a dataclass saved as its fields) as checkpoint `index`
        when `index % period == 0` or `force` (the last epoch, say); returns its URI, or `None`
        when it did not save. Saving an index again replaces its file."""
        if not self.checkpoint:
            return None
        saves = self._saves
        return saves.save(index, _lend(_as_dict(state), saves.location(index)), force)

    def save_model(self, model_state: Mapping[str, Any], index: int) -> str | None:
        """Saves `model_state` as `{file_prefix}_model{index}.{file_ext}` under
        `model_state_save_dir`; returns its URI, or `None` when there is no such directory or
        checkpointing is off."""
        if not self.checkpoint or not self.model_state_save_dir:
            return None
        name = f"{self.file_prefix}_model{index}.{self.file_ext}"
        uri = f"{self.model_state_save_dir.rstrip('/')}/{name}"
        ckptio.save(uri, model_state, self.storage_options, format="torch")
        return uri

    def load(self) -> dict[str, Any] | None:
        """The checkpoint `load_filename` under `load_dir`, or the latest one there (see
        `get_latest_file`), read onto the CPU; `None` when there is no `load_dir` or nothing to
        load."""
        if not self.load_dir:
            return None
        if self.load_filename:
            path = f"{self.load_dir.rstrip('/')}/{self.load_filename}"
        else:
            found = self.get_latest_file(
                self.load_dir, self.file_prefix, self.file_ext, self.storage_options
            )
            if found is None:
                log.info("no checkpoint under %s", self.load_dir)
                return None
            path = found
        log.debug("loading checkpoint %s", path)
        loaded: dict[str, Any] = ckptio.load(path, self.storage_options, map_location="cpu")
        return loaded

    @staticmethod
    def get_latest_file(
        load_dir: str,
        file_prefix: str,
        file_ext: str = "pt",
        storage_options: Mapping[str, Any] | None = None,
    ) -> str | None:
        """The URI of the checkpoint with the greatest index under `load_dir`, searched
        recursively: files named `{file_prefix}…{index}.{file_ext}` (the index is the name's
        last number; model-only files, `{file_prefix}_model{index}`, are not checkpoints).
        A file that does not open (a save some other tool left half-written) is passed over.
        `None` when there is none."""
        ext = "." + file_ext.lstrip(".")
        model = re.compile(re.escape(file_prefix) + r"_model\d+$")
        options = dict(storage_options) if storage_options else None
        base = load_dir.rstrip("/") + "/"
        try:
            names = ckptio.walk(base, options)
        except FileNotFoundError:
            return None
        candidates = []
        for name in names:
            leaf = name.rsplit("/", 1)[-1]
            if not (leaf.startswith(file_prefix) and leaf.endswith(ext)):
                continue
            stem = leaf[: -len(ext)]
            numbers = re.findall(r"\d+", stem[len(file_prefix) :])
            if not numbers or model.fullmatch(stem):
                continue
            candidates.append((int(numbers[-1]), name))
        for _, name in sorted(candidates, reverse=True):
            with contextlib.suppress(ckptio.Error):
                ckptio.open(base + name, options)
                return base + name
            log.warning("passing over %s%s: it does not open", base, name)
        return None


def _as_dict(state: Any) -> dict[str, Any]:
    if isinstance(state, Mapping):
        return dict(state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    raise TypeError(f"a checkpoint is a dict or a dataclass, not {type(state).__name__}")


__all__ = ["DefaultCheckpointer"]
