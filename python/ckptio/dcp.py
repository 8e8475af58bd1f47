"""torch.distributed.checkpoint on any URI: a `StorageWriter` and a `StorageReader` over ckptio.

    import torch.distributed.checkpoint as dcp
    from ckptio.dcp import CkptioStorageReader, CkptioStorageWriter

    dcp.save(state, storage_writer=CkptioStorageWriter("s3://bucket/run/step-100", options))
    dcp.load(state, storage_reader=CkptioStorageReader("s3://bucket/run/step-100", options))

The layout is torch's own (`__{rank}_{n}.distcp` files of `torch.save` archives, one per tensor
chunk, and a pickled `.metadata`), so torch's `FileSystemReader` reads a checkpoint copied to
local disk with `ckptio cp`, and this reader reads what `FileSystemWriter` wrote. What differs:

- each rank writes its data files as multipart uploads, tensors read in place (no copy), files
  written concurrently with `thread_count`;
- the coordinator writes `.metadata` last and create-only: it is the commit, a checkpoint
  without it is not one, and two saves to one URI cannot both commit (`overwrite=True` replaces
  a committed one instead);
- each rank reads only the byte ranges its load plan needs, coalesced, in parallel and pinned
  to the version each file had when the read began; `.metadata` is unpickled with an
  allow-list of DCP's own classes.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, cast

import numpy as np
import torch
from torch.distributed.checkpoint.filesystem import (
    _StorageInfo,
    _StoragePrefix,
    _StorageReaderTransforms,
)
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from ckptio import _ckptio
from ckptio._convert import lend, to_torch

METADATA = ".metadata"
DATA_SUFFIX = ".distcp"
# The version torch's FileSystemWriter records.
DCP_VERSION = "1.0.0"


def _uri(path: Any) -> str:
    return str(path).rstrip("/")


class _AtUri:
    """What the writer and the reader share: the checkpoint's URI as DCP's checkpoint id."""

    path: str

    @property
    def checkpoint_id(self) -> str:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return _is_uri(checkpoint_id)


class CkptioStorageWriter(_AtUri, StorageWriter):
    """Writes a DCP checkpoint to `path`, any URI ckptio writes.

    `storage_options` are the store's (an `endpoint`, credentials, ...). `thread_count` data
    files per rank are written at once (each a multipart upload with several parts in
    flight). `overwrite` lets a save replace a committed checkpoint; by default a second save
    to a committed path raises `ckptio.CommittedError` before anything is written.
    """

    def __init__(
        self,
        path: str,
        storage_options: dict[str, Any] | None = None,
        *,
        thread_count: int = 1,
        overwrite: bool = False,
        memory_budget: int = 64 << 20,
    ) -> None:
        super().__init__()
        self.path = _uri(path)
        self.storage_options = storage_options or None
        self.thread_count = max(1, thread_count)
        self.overwrite = overwrite
        self.memory_budget = memory_budget
        self.save_id = uuid.uuid4().hex
        self.rank: int | None = None
        self.use_collectives = True

    def reset(self, checkpoint_id: Any = None) -> None:
        if checkpoint_id:
            self.path = _uri(checkpoint_id)
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)

    def _metadata_uri(self) -> str:
        if not self.use_collectives and self.rank is not None:
            return f"{self.path}/__{self.rank}{METADATA}"
        return f"{self.path}/{METADATA}"

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        # Every rank looks, so that all of them refuse together (DCP's collectives expect it).
        if not self.overwrite:
            try:
                _ckptio.stat(self._metadata_uri(), self.storage_options)
            except FileNotFoundError:
                pass
            else:
                raise _ckptio.CommittedError(
                    f"{self.path}: a committed checkpoint is there (its {METADATA} exists); "
                    "pass overwrite=True to replace it"
                )
        if self.rank is not None and not self.use_collectives:
            plan = dataclasses.replace(plan, storage_data=_StoragePrefix(f"__{self.rank}_"))
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return [
            dataclasses.replace(plan, storage_data=_StoragePrefix(f"__{i}_"))
            if plan.storage_data is None
            else plan
            for i, plan in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        prefix: str = plan.storage_data.prefix
        buckets = [b for b in _buckets(self.thread_count, plan.items) if b]

        def write(n: int, bucket: list[WriteItem]) -> list[WriteResult]:
            name = f"{prefix}{n}{DATA_SUFFIX}"
            items = [_lendable(planner.resolve_data(item)) for item in bucket]
            placed = _ckptio.write_dcp_file(
                f"{self.path}/{name}",
                items,
                self.storage_options,
                memory_budget=self.memory_budget,
            )
            return [
                WriteResult(
                    index=item.index,
                    size_in_bytes=length,
                    storage_data=_StorageInfo(name, offset, length),
                )
                for item, (offset, length) in zip(bucket, placed, strict=True)
            ]

        results: list[WriteResult] = []
        if len(buckets) <= 1:
            for n, bucket in enumerate(buckets):
                results += write(n, bucket)
        else:
            with ThreadPoolExecutor(len(buckets)) as pool:
                for done in pool.map(write, range(len(buckets)), buckets):
                    results += done
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        metadata.version = DCP_VERSION
        metadata.storage_data = {r.index: r.storage_data for rs in results for r in rs}
        metadata.storage_meta = self.storage_meta()
        _ckptio.put(
            self._metadata_uri(),
            pickle.dumps(metadata),
            self.storage_options,
            create=not self.overwrite,
        )

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.path, save_id=self.save_id)


class CkptioStorageReader(_AtUri, StorageReader):
    """Reads a DCP checkpoint at `path`, any URI ckptio reads: each rank fetches only the byte
    ranges its plan needs. `bytes_read` counts the bytes this reader moved."""

    def __init__(self, path: str, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.path = _uri(path)
        self.storage_options = storage_options or None
        self.storage_data: dict[Any, _StorageInfo] = {}
        self.load_id = uuid.uuid4().hex
        self.transforms = _StorageReaderTransforms()
        self.bytes_read = 0
        self.rank: int | None = None

    def reset(self, checkpoint_id: Any = None) -> None:
        self.storage_data = {}
        if checkpoint_id:
            self.path = _uri(checkpoint_id)
        self.load_id = uuid.uuid4().hex

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        name = METADATA if rank is None else f"__{rank}{METADATA}"
        uri = f"{self.path}/{name}"
        raw = _ckptio.get(uri, self.storage_options)
        try:
            metadata = _MetadataUnpickler(_Span(_view(raw))).load()
        except _Refused as e:
            raise pickle.UnpicklingError(f"{uri}: {e}") from None
        except Exception as e:  # a truncated or garbled pickle fails in many ways
            raise _ckptio.CorruptError(f"{uri}: not a DCP metadata pickle ({e})") from e
        if not isinstance(metadata, Metadata):
            raise _ckptio.CorruptError(f"{uri}: holds a {type(metadata).__name__}, not Metadata")
        meta = getattr(metadata, "storage_meta", None) or StorageMeta()
        meta.load_id = self.load_id
        metadata.storage_meta = meta
        return metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        if metadata.storage_data is None:
            raise ValueError(f"{self.path}/{METADATA}: no storage data")
        self.storage_data = metadata.storage_data
        self.rank = kwargs.get("rank")

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def _info(self, item: Any) -> _StorageInfo:
        """Where `item` is stored, as `.metadata` says."""
        info = self.storage_data.get(item.storage_index)
        if info is None:
            raise _ckptio.CorruptError(
                f"{self.path}/{METADATA}: no storage entry for {item.storage_index}"
            )
        return info

    def _load(self, item: Any, name: str, part: Any, planner: LoadPlanner) -> None:
        """Hands `planner` the item stored in `part` (its bytes of data file `name`)."""
        info = self._info(item)
        where = f"{self.path}/{name} bytes {info.offset}..{info.offset + info.length}"
        stream = self.transforms.transform_load_stream(
            item, info.transform_descriptors or (), cast(IO[bytes], _Span(_view(part)))
        )
        if item.type == LoadItemType.BYTE_IO:
            planner.load_bytes(item, io.BytesIO(stream.read()))
            return
        if info.transform_descriptors:
            tensor = _torch_load(stream, where, item)
        else:
            tensor = _stored_tensor(part, where, item)
        tensor = _narrow(tensor, item.storage_offsets, item.lengths)
        target = planner.resolve_tensor(item).detach()
        if target.size() != tensor.size():
            raise ValueError(
                f"{where}: item {item.storage_index} holds "
                f"{tuple(tensor.size())} where the plan wants {tuple(target.size())}"
            )
        _copy(target, tensor)
        planner.commit_tensor(item, target)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # Per data file: each stored span, and the items read from it.
        spans: dict[str, dict[tuple[int, int], list[Any]]] = {}
        for item in plan.items:
            info = self._info(item)
            spans.setdefault(info.relative_path, {}).setdefault(_span(info), []).append(item)
        names = list(spans)
        reads = [(f"{self.path}/{name}", list(spans[name])) for name in names]
        # Each span is handed to the planner as soon as it lands, while the rest are fetched.
        for file, index, part in _ckptio.read_ranges_as_ready(reads, self.storage_options):
            name = names[file]
            self.bytes_read += len(part)
            for item in spans[name][reads[file][1][index]]:
                self._load(item, name, part, planner)
        future: Future[None] = Future()
        future.set_result(None)
        return future


def _is_uri(checkpoint_id: Any) -> bool:
    """Whether `checkpoint_id` names a store (torch picks this storage for such ids)."""
    scheme, sep, _ = str(checkpoint_id).partition("://")
    return bool(sep) and scheme in _SCHEMES


_SCHEMES = {"s3", "gs", "az", "abfs", "http", "https", "file", "memory"}


def _lendable(data: Any) -> Any:
    """A resolved write item as the extension takes it: bytes, or a tensor lent in place."""
    return data.getvalue() if isinstance(data, io.BytesIO) else lend(data)


def _buckets(bins: int, items: Sequence[WriteItem]) -> list[list[WriteItem]]:
    """`items` split into `bins` files of about equal size (as torch's FileSystemWriter does)."""
    if bins == 1:
        return [list(items)]
    buckets: list[list[WriteItem]] = [[] for _ in range(bins)]
    sizes = [0] * bins
    objects = [i for i in items if i.type == WriteItemType.BYTE_IO]
    tensors = sorted((i for i in items if i.type != WriteItemType.BYTE_IO), key=_size, reverse=True)
    for n, item in enumerate(objects):
        buckets[n % bins].append(item)
    for item in tensors:
        smallest = sizes.index(min(sizes))
        buckets[smallest].append(item)
        sizes[smallest] += _size(item)
    return buckets


def _size(item: WriteItem) -> int:
    if item.tensor_data is None:
        return 0
    numel = 1
    for n in item.tensor_data.size:
        numel *= n
    return numel * item.tensor_data.properties.dtype.itemsize


_ZIP = b"PK\x03\x04"


def _stored_tensor(part: Any, where: str, item: Any) -> torch.Tensor:
    """The tensor a plain `torch.save` archive in `part` holds, as a view of `part`: the
    archive is parsed where it lies, the storage's CRC-32 checked, nothing copied."""
    if np.asarray(part)[:4].tobytes() != _ZIP:
        raise _ckptio.CorruptError(
            f"{where}: item {item.storage_index} is not a torch.save archive "
            "(it does not start as a zip)"
        )
    try:
        archive = _ckptio.open_bytes(part, where)
        tensors = archive.read()
    except (_ckptio.CorruptError, _ckptio.UnsupportedError) as e:
        raise _ckptio.CorruptError(
            f"{where}: item {item.storage_index} is not a torch.save archive ({e})"
        ) from e
    if len(tensors) != 1 or archive.keys() != [""]:
        raise _ckptio.CorruptError(
            f"{where}: item {item.storage_index} holds {len(tensors)} tensors "
            f"at {archive.keys()[:3]}, not one tensor"
        )
    _, (dtype, shape, buffer) = tensors[0]
    return to_torch(dtype, shape, buffer)


def _torch_load(stream: IO[bytes], where: str, item: Any) -> torch.Tensor:
    """The tensor an archive coming through stream transforms holds, rebuilt by torch."""
    if not stream.seekable():
        stream = io.BytesIO(stream.read())
    try:
        tensor = torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's reader raises what it meets: zip, pickle, size errors
        raise _ckptio.CorruptError(
            f"{where}: item {item.storage_index} is not a torch.save archive ({e})"
        ) from e
    if not isinstance(tensor, torch.Tensor):
        raise _ckptio.CorruptError(f"{where}: holds a {type(tensor).__name__}, not a tensor")
    return tensor


def _copy(target: torch.Tensor, tensor: torch.Tensor) -> None:
    """Copies `tensor` into `target`: one memcpy on this thread when both lie flat in CPU
    memory alike, since `copy_` splits a large copy over torch's intra-op threads, whose
    spinning takes the cores the reads still in flight need; `copy_` otherwise."""
    if (
        target.device.type == "cpu"
        and target.dtype == tensor.dtype
        and target.is_contiguous()
        and tensor.is_contiguous()
        and not (target.is_conj() or target.is_neg() or tensor.is_conj() or tensor.is_neg())
    ):
        np.copyto(_flat_bytes(target), _flat_bytes(tensor))
    else:
        target.copy_(tensor)


def _flat_bytes(tensor: torch.Tensor) -> np.ndarray[Any, Any]:
    """A contiguous CPU tensor's memory as a one-dimensional `uint8` array (shared)."""
    return tensor.reshape(-1).view(torch.uint8).numpy()


def _narrow(tensor: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    """The part of a stored chunk a read item asks for."""
    for dim, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
        if offset != 0 or length != tensor.size(dim):
            tensor = tensor.narrow(dim, offset, length)
    return tensor


def _span(info: _StorageInfo) -> tuple[int, int]:
    return (info.offset, info.offset + info.length)


class _Span(io.RawIOBase):
    """A seekable, read-only file over bytes already in memory, read without copying them
    first (as `io.BytesIO` would)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), len(self._view) - self._at))
        out[:n] = self._view[self._at : self._at + n]
        self._at += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError(f"seek to {base + offset}, before the start")
        self._at = base + offset
        return self._at

    def tell(self) -> int:
        return self._at


def _view(buffer: Any) -> memoryview:
    array: Any = np.asarray(buffer)
    return memoryview(array).cast("B")


class _Refused(pickle.UnpicklingError):
    """A global the metadata allow-list refuses."""


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles `.metadata` building only DCP's metadata classes and the torch values they
    hold; any other global is refused (a `.metadata` is data, not code)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.distributed.checkpoint.metadata" or (
            module == "torch.distributed.checkpoint.filesystem" and name == "_StorageInfo"
        ):
            return super().find_class(module, name)
        if module == "torch":
            value = getattr(torch, name, None)
            if name == "Size" or isinstance(value, (torch.dtype, torch.layout)):
                return super().find_class(module, name)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refused to load global `{module}.{name}`")


_ALLOWED = {
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
}

__all__ = ["CkptioStorageReader", "CkptioStorageWriter"]
