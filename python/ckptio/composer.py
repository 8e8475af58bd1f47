"""Composer: an `ObjectStore` and a logger destination over ckptio, and Composer's
`load_checkpoint` applied lazily.

    from composer import Trainer
    from ckptio.composer import CkptioObjectStore, CkptioUploader, load_checkpoint

    options = {"endpoint": "http://127.0.0.1:9000"}
    # every checkpoint is uploaded under its name, {run_name}/checkpoints/ep{epoch}-...
    trainer = Trainer(..., save_folder="{run_name}/checkpoints", save_interval="1ep",
                      loggers=[CkptioUploader("s3://bucket/runs", options)])
    trainer = Trainer(..., load_path="my-run/checkpoints/ep2-ba4-rank0.pt",
                      load_object_store=CkptioObjectStore("s3://bucket/runs", options))

    # only state/model moves:
    rng = load_checkpoint("s3://bucket/runs/my-run/checkpoints/ep2-ba4-rank0.pt", state,
                          storage_options=options, load_weights_only=True)
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from composer.loggers import LoggerDestination
from composer.utils import ObjectStore, ObjectStoreTransientError

import ckptio


class CkptioObjectStore(ObjectStore):
    """A Composer `ObjectStore` over `root`, any URI ckptio reads and writes: object names are
    paths below it. Uploads are multipart from the file, downloads are parallel ranges pinned
    to one version and resumable, and failures the store may recover from (throttling, a
    dropped connection, after ckptio's own retries) raise `ObjectStoreTransientError`."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options) if storage_options else None

    def get_uri(self, object_name: str) -> str:
        return f"{self.root}/{object_name.lstrip('/')}"

    def upload_object(
        self,
        object_name: str,
        filename: str | pathlib.Path,
        callback: Callable[[int, int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        del kwargs  # other stores' options
        size = os.path.getsize(filename)
        with _transient():
            ckptio.cp(str(filename), self.get_uri(object_name), dst_options=self.storage_options)
        if callback is not None:
            callback(size, size)

    def get_object_size(self, object_name: str) -> int:
        with _transient():
            info = ckptio.stat(self.get_uri(object_name), self.storage_options)
        return int(info["size"] or 0)

    def download_object(
        self,
        object_name: str,
        filename: str | pathlib.Path,
        overwrite: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> None:
        if os.path.exists(filename) and not overwrite:
            raise FileExistsError(f"{filename} exists; pass overwrite=True to replace it")
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        with _transient():
            ckptio.download(
                self.get_uri(object_name), str(filename), self.storage_options, progress=callback
            )

    def list_objects(self, prefix: str | None = None) -> list[str]:
        with _transient():
            try:
                names = ckptio.walk(self.root + "/", self.storage_options)
            except FileNotFoundError:
                return []
        return [n for n in names if n.startswith(prefix or "")]


class CkptioUploader(LoggerDestination):
    """A Composer logger destination that uploads what the trainer logs as files (every
    checkpoint, and the `latest` symlink files) to `root`, any URI ckptio writes; with the
    trainer's `save_folder` on local disk, checkpoints land there and here. Uploads finish
    before the trainer goes on, so a checkpoint the trainer reports saved is on the store."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.store = CkptioObjectStore(root, storage_options)

    def can_upload_files(self) -> bool:
        return True

    def upload_file(
        self, state: Any, remote_file_name: str, file_path: pathlib.Path, *, overwrite: bool
    ) -> None:
        del state
        if not overwrite:
            with contextlib.suppress(FileNotFoundError):
                self.store.get_object_size(remote_file_name)
                raise FileExistsError(f"{self.store.get_uri(remote_file_name)} exists")
        self.store.upload_object(remote_file_name, file_path)

    def download_file(
        self,
        remote_file_name: str,
        destination: str,
        overwrite: bool = False,
        progress_bar: bool = True,
    ) -> None:
        del progress_bar
        self.store.download_object(remote_file_name, destination, overwrite=overwrite)


def load_checkpoint(
    path: str,
    state: Any,
    logger: Any = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    load_weights_only: bool = False,
    strict_model_weights: bool = True,
    ignore_keys: Sequence[str] | Callable[[dict[str, Any]], None] | None = None,
    exclude_algorithms: list[str] | None = None,
    algorithm_passes: list[Any] | None = None,
    progress: bool | Callable[[int, int], object] | None = None,
) -> list[dict[str, Any]] | None:
    """Composer's `load_checkpoint` for a checkpoint at `path` (any URI), read lazily: with
    `load_weights_only` only `state/model` is fetched, and tensors under `ignore_keys` globs
    (Composer's: `/`-joined paths, `*` crossing `/`) are never fetched. Restores `state` as
    Composer does and returns the checkpoint's RNG states (`None` with `load_weights_only`).
    `progress` is `True` for a tqdm bar or a callable given `(done, total)` bytes. Nothing in
    the file is executed."""
    from composer.loggers import Logger

    logger = logger if logger is not None else Logger(state)
    select = ["state/model"] if load_weights_only else None
    globs = list(ignore_keys) if ignore_keys is not None and not callable(ignore_keys) else None
    state_dict: dict[str, Any] = ckptio.load(
        path,
        storage_options,
        select=select,
        ignore=globs,
        framework="pt",
        map_location="cpu",
        progress=progress,
    )
    if callable(ignore_keys):
        ignore_keys(state_dict)
    state_dict["state"] = state_dict.get("state", {})
    if load_weights_only:
        state.load_model_state(
            state_dict["state"],
            logger,
            strict=strict_model_weights,
            exclude_algorithms=exclude_algorithms,
            algorithm_passes=algorithm_passes,
        )
        return None
    state.load_state_dict(
        state_dict["state"],
        logger,
        exclude_algorithms=exclude_algorithms,
        algorithm_passes=algorithm_passes,
    )
    rng: list[dict[str, Any]] | None = state_dict.get("rng")
    return rng


@contextlib.contextmanager
def _transient() -> Any:
    """ckptio's transport failures that may pass, as Composer's transient error."""
    try:
        yield
    except ckptio.TransportError as e:
        if getattr(e, "retryable", False):
            raise ObjectStoreTransientError(str(e)) from e
        raise


__all__ = ["CkptioObjectStore", "CkptioUploader", "load_checkpoint"]
