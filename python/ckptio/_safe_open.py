"""`safe_open`, as Python's safetensors has it, for every format ckptio reads and every URI."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ckptio._api import Checkpoint, open


class safe_open:
    """Opens a checkpoint for reading tensors one at a time, as `safetensors.safe_open` does
    (and under its name, so code written for it runs unchanged)::

        with ckptio.safe_open("s3://bucket/model.safetensors.index.json", framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)

    Any format and any URI ckptio opens works: a Lightning `.ckpt` on GCS, a DCP directory over
    HTTP. Only the tensors asked for are read.
    """

    def __init__(
        self,
        filename: str,
        framework: str = "pt",
        device: str = "cpu",
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._checkpoint: Checkpoint = open(str(filename), storage_options, framework=framework)
        self._device = device

    def __enter__(self) -> safe_open:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def keys(self) -> list[str]:
        """The tensors' names (their paths in the checkpoint), sorted, as safetensors gives
        them."""
        return sorted(self._checkpoint.keys())

    def offset_keys(self) -> list[str]:
        """The tensors' names in the order of their bytes in the file (ckptio's file order),
        as safetensors gives them."""
        return list(self._checkpoint.keys())

    def metadata(self) -> dict[str, str] | None:
        """The file's metadata (`__metadata__`), or `None`."""
        return self._checkpoint.metadata or None

    def get_tensor(self, name: str) -> Any:
        """Reads tensor `name`."""
        return self._to_device(self._checkpoint.get_tensor(name))

    def get_slice(self, name: str) -> _Slice:
        """Tensor `name`, to be read in part: `f.get_slice(name)[a:b]` reads rows `a:b` only."""
        return _Slice(self, name)

    def _to_device(self, tensor: Any) -> Any:
        if self._device != "cpu" and hasattr(tensor, "to"):
            return tensor.to(self._device)
        return tensor


class _Slice:
    """A tensor to be read in part, as safetensors' `PySafeSlice`."""

    def __init__(self, owner: safe_open, name: str) -> None:
        self._owner = owner
        self._name = name
        self._info = owner._checkpoint.info(name)

    def get_shape(self) -> list[int]:
        """Its shape."""
        return list(self._info.shape)

    def get_dtype(self) -> str:
        """Its dtype, as safetensors names it (`F32`, `BF16`, ...)."""
        return self._info.dtype

    def __getitem__(self, index: Any) -> Any:
        """Rows of the first dimension are read alone (`[a:b]`, `[i]`); further indices apply to
        what was read."""
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        rows = self._info.shape[0] if self._info.shape else 0
        if not self._info.shape:
            tensor = self._owner._checkpoint.get_tensor(self._name)
            return self._owner._to_device(tensor[index] if index != () else tensor)
        if isinstance(first, int):
            i = first + rows if first < 0 else first
            if not 0 <= i < rows:
                raise IndexError(f"index {first} is out of bounds for {rows} rows")
            # A 0-d array for a 1-d tensor's element, as safetensors (and torch) give it.
            part = self._read(i, i + 1)[0, ...]
        elif isinstance(first, slice):
            start, stop, step = first.indices(rows)
            part = self._read(start, max(start, stop)) if step == 1 else self._read(0, rows)[first]
        elif first is Ellipsis:
            # The indices after it count from the last dimension: the whole index applies.
            return self._owner._to_device(self._read(0, rows)[index])
        else:
            part = self._read(0, rows)[first]
        if rest:
            part = part[(slice(None), *rest)] if not isinstance(first, int) else part[rest]
        return self._owner._to_device(part)

    def _read(self, start: int, stop: int) -> Any:
        return self._owner._checkpoint.get_rows(self._name, start, stop)
