"""The Python API over the extension: open, load, save, stream, and the checkpoint object."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ckptio import _ckptio
from ckptio._ckptio import UnsupportedError
from ckptio._convert import convert, framework_of, is_tensor, lend

Progress = bool | Callable[[int, int], object] | None


class TensorInfo(NamedTuple):
    """A tensor's type and size, known without reading it."""

    dtype: str
    """ckptio's dtype name: `F32`, `BF16`, `F8_E4M3`, ..."""
    shape: tuple[int, ...]
    nbytes: int


def _progress(progress: Progress, what: str) -> Callable[[int, int], object] | None:
    """A `(done, total)` callable for `progress`: itself, a tqdm bar for `True`, or `None`."""
    if progress is None or progress is False:
        return None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        bar = tqdm(total=0, unit="B", unit_scale=True, desc=what)

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        return update
    return progress


class Checkpoint:
    """A checkpoint opened lazily: its format, metadata and tree are known, no tensor has been
    read. Reads return torch tensors (`framework="pt"`) or numpy arrays (`"np"`) over the bytes
    read, without a copy; the default is torch when it is importable.
    """

    def __init__(self, inner: _ckptio.Checkpoint, framework: str | None = None) -> None:
        self._inner = inner
        self._framework = framework_of(framework)

    @property
    def uri(self) -> str:
        """The URI it was opened from (secrets redacted)."""
        return self._inner.uri

    @property
    def format(self) -> str:
        """The format it was read as."""
        return self._inner.format

    @property
    def metadata(self) -> dict[str, str]:
        """Free-form metadata: safetensors `__metadata__`, an index's, a manifest's."""
        return self._inner.metadata

    def keys(self) -> list[str]:
        """Every tensor's path (`state_dict/layer.weight`), in tree order."""
        return self._inner.keys()

    def __len__(self) -> int:
        return len(self._inner)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self._inner

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def info(self, path: str) -> TensorInfo:
        """A tensor's dtype, shape and size in bytes, without reading it."""
        dtype, shape, nbytes = self._inner.info(path)
        return TensorInfo(dtype, tuple(shape), nbytes)

    def quantization(self, path: str) -> tuple[str, tuple[int, ...]] | None:
        """For a block-quantized tensor (GGUF's `Q4_K`, ...), its scheme and the shape of its
        values; `None` for any other. Such a tensor reads as its raw blocks (`U8`, one row of
        blocks per innermost row of values) unless the checkpoint was opened with
        `dequantize=True`."""
        q = self._inner.quantization(path)
        return None if q is None else (q[0], tuple(q[1]))

    def tree(self) -> dict[str, Any]:
        """The nested tree: dicts, lists, Python scalars and strings, `TensorRef`s for the
        tensors (not read), `Opaque` placeholders for objects ckptio does not interpret."""
        return self._inner.tree()

    def get_tensor(self, path: str, *, framework: str | None = None) -> Any:
        """Reads one tensor: only its bytes move."""
        ((_, (dtype, shape, buffer)),) = self._inner.read([path])
        return convert(self._fw(framework), dtype, shape, buffer)

    def __getitem__(self, path: str) -> Any:
        return self.get_tensor(path)

    def get_rows(
        self, path: str, start: int = 0, stop: int | None = None, *, framework: str | None = None
    ) -> Any:
        """Reads rows `start:stop` of a tensor's first dimension, as `tensor[start:stop]` would
        (negative indices count from the end, bounds are clipped): only the bytes those rows
        need (for a distributed checkpoint, only the chunks that hold them)."""
        rows = self.info(path).shape[:1]
        if rows:
            start, stop, _ = slice(start, stop).indices(rows[0])
            stop = max(start, stop)
        elif stop is None:
            stop = start
        dtype, shape, buffer = self._inner.read_rows(path, start, stop)
        return convert(self._fw(framework), dtype, shape, buffer)

    def get_bytes(self, path: str, start: int = 0, stop: int | None = None) -> memoryview:
        """Bytes `start:stop` of a contiguous tensor as stored (little-endian), without
        interpreting them; the bounds mean what they mean to `bytes[start:stop]`."""
        start, stop, _ = slice(start, stop).indices(self.info(path).nbytes)
        stop = max(start, stop)
        return memoryview(_as_array(self._inner.read_bytes(path, start, stop)))

    def read(
        self, paths: Sequence[str] | None = None, *, framework: str | None = None
    ) -> dict[str, Any]:
        """Reads the tensors at `paths` (every tensor when `None`): grouped per object,
        coalesced, in parallel. Returns them by path, in file order."""
        fw = self._fw(framework)
        read = self._inner.read(None if paths is None else list(paths))
        return {path: convert(fw, *parts) for path, parts in read}

    def stream(
        self, paths: Sequence[str] | None = None, *, framework: str | None = None
    ) -> Iterator[tuple[str, Any]]:
        """The tensors at `paths` (every tensor when `None`) as `(path, tensor)` in file order,
        at most two batches of the memory budget held at once."""
        fw = self._fw(framework)
        for path, parts in self._inner.stream(None if paths is None else list(paths)):
            yield path, convert(fw, *parts)

    def _fw(self, framework: str | None) -> str:
        return self._framework if framework is None else framework_of(framework)

    def __repr__(self) -> str:
        return f"<ckptio.Checkpoint {self.uri} ({self.format}, {len(self)} tensors)>"


def _as_array(buffer: _ckptio.Buffer) -> Any:
    import numpy as np

    return np.asarray(buffer)


def open(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    framework: str | None = None,
    strict: bool = False,
    verify: bool = True,
    memory_budget: int = 64 << 20,
    mmap: bool = True,
    huge_pages: bool = False,
    dequantize: bool = False,
    progress: Progress = None,
) -> Checkpoint:
    """Opens the checkpoint at `uri` lazily, whatever its format: safetensors (a file, or
    shards with an index), a `torch.save` file (`.pt`, `.ckpt`, `pytorch_model.bin`), a GGUF
    file, a torch.distributed.checkpoint directory, a ckptio checkpoint, a Hugging Face model
    directory, an accelerate `save_state` directory. Only metadata moves.

    `storage_options` are the store's options as strings (`endpoint`, `region`, ...; the
    environment's `AWS_*`, `GOOGLE_*`, `AZURE_*` apply too). `select` keeps only paths
    matching one of its globs (and what lies below them; `*` crosses `/`), `ignore` drops them.
    `strict` refuses pickled classes ckptio does not understand; `verify` checks stored
    checksums as tensors are read. `mmap` (local files only) makes tensors views of a private
    mapping of the file, as `torch.load(mmap=True)` does: no copy, pages shared with the page
    cache, writes kept in this process. Turn it off for a file another process may truncate
    while its tensors are in use (a mapped reader faults then). `huge_pages` asks the kernel
    for transparent huge pages for tensors fetched into memory: a remote 1 GiB read took 0.47 s
    instead of 0.85 s where huge pages were at hand, and longer in a VM whose host reclaims
    free memory (see `FetchOptions::huge_pages` in the Rust docs). `dequantize` makes
    block-quantized tensors (GGUF's `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, `Q2_K`...`Q6_K`)
    their F32 values, decoded as they are read; other schemes stay raw blocks.
    """
    inner = _ckptio.open(
        uri,
        dict(storage_options) if storage_options else None,
        select=list(select) if select else None,
        ignore=list(ignore) if ignore else None,
        strict=strict,
        verify=verify,
        memory_budget=memory_budget,
        mmap=mmap,
        huge_pages=huge_pages,
        dequantize=dequantize,
        progress=_progress(progress, uri),
    )
    return Checkpoint(inner, framework)


def open_bytes(
    data: bytes | bytearray | memoryview | _ckptio.Buffer,
    name: str = "<bytes>",
    *,
    framework: str | None = None,
    strict: bool = False,
    verify: bool = True,
) -> Checkpoint:
    """Reads a checkpoint held whole in memory: a `torch.save` archive (zip) or a safetensors
    file, as `safetensors.torch.load(data)` or `torch.load(io.BytesIO(data))` would, with
    ckptio's restricted unpickler and checksum checks. `name` names it in errors. Tensors read
    from a `bytes` object are copies; from a `Buffer` ckptio returned (`ckptio._ckptio.get`,
    `read_ranges_as_ready`), they are views of it. Legacy torch files and GGUF are read from a
    path or a URI only (`UnsupportedError` here).
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    return Checkpoint(_ckptio.open_bytes(data, name, strict=strict, verify=verify), framework)


def load(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    map_location: Any = None,
    framework: str | None = None,
    strict: bool = False,
    verify: bool = True,
    mmap: bool = True,
    huge_pages: bool = False,
    dequantize: bool = False,
    progress: Progress = None,
) -> Any:
    """The checkpoint at `uri` as `torch.load` would return it: dicts, lists, scalars, strings
    and tensors (torch tensors, or numpy arrays with `framework="np"`), every tensor read in
    parallel and coalesced. Objects of classes ckptio does not interpret come back as inert
    `Opaque` placeholders naming their class: nothing is ever executed. `map_location` moves
    torch tensors as `torch.load` means it (a device, a dict, a callable). `mmap`,
    `huge_pages` and `dequantize` are `open`'s.
    """
    checkpoint = open(
        uri,
        storage_options,
        select=select,
        ignore=ignore,
        framework=framework,
        strict=strict,
        verify=verify,
        mmap=mmap,
        huge_pages=huge_pages,
        dequantize=dequantize,
        progress=progress,
    )
    fw = checkpoint._framework
    tensors = checkpoint.read()
    if map_location is not None and fw == "pt":
        tensors = {p: _relocate(t, map_location) for p, t in tensors.items()}
    tree = _fill(checkpoint.tree(), tensors)
    # A torch file whose top object is not a dict holds it under the empty key.
    if list(tree) == [""]:
        return tree[""]
    return tree


def _relocate(tensor: Any, map_location: Any) -> Any:
    """`tensor` (read onto the CPU) where `map_location` puts it, as `torch.load` means it: a
    device or its name, a dict from the saved location (here always `"cpu"`) to the target, or
    a callable given `(storage, "cpu")` that returns a storage (or `None` to keep it)."""
    if isinstance(map_location, dict):
        target = map_location.get("cpu")
        return tensor if target is None else tensor.to(target)
    if callable(map_location):
        storage = map_location(tensor.untyped_storage(), "cpu")
        if storage is None or storage.device == tensor.device:
            return tensor
        return tensor.to(storage.device)
    return tensor.to(map_location)


def _fill(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, _ckptio.TensorRef):
        return tensors[value.path]
    if isinstance(value, dict):
        return {k: _fill(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, tensors) for v in value]
    if isinstance(value, tuple):
        return tuple(_fill(v, tensors) for v in value)
    return value


def save(
    uri: str,
    state: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
    *,
    format: str | None = None,
    metadata: Mapping[str, str] | None = None,
    max_shard_size: int | None = None,
    memory_budget: int = 64 << 20,
    progress: Progress = None,
) -> list[str]:
    """Saves `state` (nested dicts, lists, tuples, numbers, strings, bytes, torch tensors and
    numpy arrays) at `uri`, streaming each tensor from its own memory (no copy, unless it is
    not contiguous or not on the CPU) into multipart uploads.

    `format="ckptio"` writes a ckptio checkpoint directory, committed atomically by its
    manifest (a checkpoint that exists is complete). `format="safetensors"` writes one file, or
    shards and an index with `max_shard_size`; it holds tensors only. `format="torch"` writes
    one `torch.save` file that `torch.load(uri, weights_only=True)` reads as `state`, which
    appears whole or not at all (what was at `uri` stays until then). Without `format`, the
    name decides, as for `ckptio convert`: `.safetensors` a safetensors file, `.pt`, `.pth`,
    `.ckpt` and `.bin` a torch file, anything else a ckptio checkpoint. Returns the URIs
    written.
    """
    lent = _lend(dict(state), uri)
    return _ckptio.save(
        uri,
        lent,
        format,
        dict(storage_options) if storage_options else None,
        metadata=dict(metadata) if metadata else None,
        max_shard_size=max_shard_size,
        memory_budget=memory_budget,
        progress=_progress(progress, uri),
    )


def _lend(value: Any, uri: str, path: str = "") -> Any:
    """`value` with each tensor lent (see `lend`); a tensor that cannot be saved is an
    `UnsupportedError` naming `uri` and the tensor's path."""
    if is_tensor(value):
        try:
            return lend(value)
        except UnsupportedError as e:
            raise UnsupportedError(f"{uri}: tensor `{path}`: {e}") from None

    def at(key: Any) -> str:
        return f"{path}/{key}" if path else str(key)

    if isinstance(value, Mapping):
        return {k: _lend(v, uri, at(k)) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_lend(v, uri, at(i)) for i, v in enumerate(value))
    if _is_numpy_scalar(value):
        return value.item()
    if isinstance(value, list):
        return [_lend(v, uri, at(i)) for i, v in enumerate(value)]
    return value


def stream(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    framework: str | None = None,
    memory_budget: int = 64 << 20,
) -> Iterator[tuple[str, Any]]:
    """Every tensor of the checkpoint at `uri` as `(path, tensor)`, in file order, with at most
    two batches of `memory_budget` bytes held at once."""
    checkpoint = open(
        uri,
        storage_options,
        select=select,
        ignore=ignore,
        framework=framework,
        memory_budget=memory_budget,
    )
    yield from checkpoint.stream()


def download(
    uri: str,
    dest: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    chunk_size: int | None = None,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    progress: Progress = None,
) -> int:
    """Downloads the object at `uri` to the local file `dest` with parallel range requests,
    pinned to its ETag; an interrupted download (an error, Ctrl-C) resumes where it stopped.
    `rate_limit` caps bytes per second. Returns its size."""
    return _ckptio.download(
        uri,
        dest,
        dict(storage_options) if storage_options else None,
        chunk_size=chunk_size,
        concurrency=concurrency,
        rate_limit=rate_limit,
        progress=_progress(progress, uri),
    )


def _is_numpy_scalar(value: Any) -> bool:
    """A numpy scalar (`np.int64(3)`, a metric's value), saved as the Python number it holds."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.generic)
