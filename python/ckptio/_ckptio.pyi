"""Type stubs of the extension module (`python/src/`)."""

from collections.abc import Callable, Iterator
from typing import Any

__version__: str

class Error(Exception): ...
class UnsafeError(Error): ...
class CorruptError(Error): ...
class UnsupportedError(Error): ...

class TransportError(Error):
    retryable: bool

class CommittedError(Error): ...
class ChangedError(Error): ...

class Buffer:
    """Bytes a tensor was read into, owned by Python; numpy views them without a copy."""

    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
    def tobytes(self) -> bytes: ...

_Read = tuple[str, list[int], Buffer]

class TensorRef:
    """A tensor of the tree, not read yet."""

    path: str
    dtype: str
    shape: list[int]
    unreadable: str | None

class Opaque:
    """An object of a class ckptio does not interpret: what the pickle said to build, never
    built."""

    module: str
    name: str
    args: list[Any]
    kwargs: Any | None
    state: Any | None

class TensorIn:
    def __init__(
        self, dtype: str, shape: list[int], address: int, nbytes: int, owner: object
    ) -> None: ...

class TensorStream:
    def __iter__(self) -> Iterator[tuple[str, _Read]]: ...
    def __next__(self) -> tuple[str, _Read]: ...

class Checkpoint:
    @property
    def uri(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    def keys(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, path: str) -> bool: ...
    def info(self, path: str) -> tuple[str, list[int], int]: ...
    def quantization(self, path: str) -> tuple[str, list[int]] | None: ...
    def tensor_ref(self, path: str) -> TensorRef: ...
    def tree(self) -> dict[str, Any]: ...
    def read(self, paths: list[str] | None = None) -> list[tuple[str, _Read]]: ...
    def read_rows(self, path: str, start: int, end: int) -> _Read: ...
    def read_bytes(self, path: str, start: int, end: int) -> Buffer: ...
    def stream(self, paths: list[str] | None = None) -> TensorStream: ...

def open(
    uri: str,
    storage_options: dict[str, Any] | None = None,
    *,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    strict: bool = False,
    verify: bool = True,
    memory_budget: int = ...,
    mmap: bool = True,
    huge_pages: bool = False,
    dequantize: bool = False,
    progress: Callable[[int, int], object] | None = None,
) -> Checkpoint: ...
def open_bytes(
    data: Buffer | bytes,
    name: str,
    *,
    strict: bool = False,
    verify: bool = True,
    memory_budget: int = ...,
) -> Checkpoint: ...
def save(
    uri: str,
    state: dict[str, Any],
    format: str | None = None,
    storage_options: dict[str, Any] | None = None,
    *,
    metadata: dict[str, str] | None = None,
    max_shard_size: int | None = None,
    memory_budget: int = ...,
    progress: Callable[[int, int], object] | None = None,
) -> list[str]: ...
def stat(uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, str | None]: ...
def download(
    uri: str,
    dest: str,
    storage_options: dict[str, Any] | None = None,
    *,
    chunk_size: int | None = None,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> int: ...
def ls(
    root: str, storage_options: dict[str, Any] | None = None, *, prefix: str | None = None
) -> list[tuple[int, str, str, bool]]: ...
def cp(
    src: str,
    dst: str,
    storage_options: dict[str, Any] | None = None,
    *,
    src_options: dict[str, Any] | None = None,
    dst_options: dict[str, Any] | None = None,
    concurrency: int = 8,
) -> tuple[int, int]: ...
def verify(
    uri: str, storage_options: dict[str, Any] | None = None, *, strict: bool = False
) -> dict[str, Any]: ...
def rm(uri: str, storage_options: dict[str, Any] | None = None, *, force: bool = False) -> str: ...
def walk(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]: ...
def read_ranges_as_ready(
    reads: list[tuple[str, list[tuple[int, int]]]],
    storage_options: dict[str, Any] | None = None,
) -> ReadyRanges: ...

class ReadyRanges:
    """`(object_index, range_index, buffer)` for each range, as soon as its bytes land."""

    def __iter__(self) -> ReadyRanges: ...
    def __next__(self) -> tuple[int, int, Buffer]: ...

def get(uri: str, storage_options: dict[str, Any] | None = None) -> Buffer: ...
def put(
    uri: str, data: bytes, storage_options: dict[str, Any] | None = None, *, create: bool = False
) -> None: ...
def write_dcp_file(
    uri: str,
    items: list[TensorIn | bytes],
    storage_options: dict[str, Any] | None = None,
    *,
    memory_budget: int = ...,
) -> list[tuple[int, int]]: ...

class Checkpointer:
    def __init__(
        self,
        root: str,
        storage_options: dict[str, Any] | None = None,
        *,
        prefix: str = "step-",
        period: int = 1,
        keep_last: int | None = None,
        extension: str | None = None,
    ) -> None: ...
    def location(self, index: int) -> str: ...
    def save(self, index: int, state: dict[str, Any], force: bool = False) -> str | None: ...
    def list(self) -> list[tuple[int, str, str, bool]]: ...
    def latest(self) -> int | None: ...
    def remove(self, index: int) -> None: ...
    def delete_existing(self) -> None: ...
