"""Bytes ckptio read, seen as numpy arrays or torch tensors without a copy; and numpy arrays or
torch tensors, lent to ckptio for saving without a copy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ckptio._ckptio import Buffer, TensorIn, UnsupportedError

if TYPE_CHECKING:
    import torch

# ckptio's dtype names and numpy's dtypes (those numpy has itself).
_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "C64": np.complex64,
    "C128": np.complex128,
}

# ckptio's dtype names and ml_dtypes' names, for numpy.
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}

# ckptio's dtype names and torch's attribute names.
_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "C128": "complex128",
    "C32": "complex32",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}

_PACKED = {"F4", "F6_E2M3", "F6_E3M2"}


def numpy_dtype(name: str) -> np.dtype[Any]:
    """numpy's dtype for ckptio's `name`: numpy's own, or ml_dtypes' for BF16 and FP8."""
    if name in _NUMPY:
        return np.dtype(_NUMPY[name])  # type: ignore[no-any-return]
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise UnsupportedError(
                f"{name} tensors need ml_dtypes for numpy (pip install ml_dtypes), or "
                "framework='pt'"
            ) from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))  # type: ignore[no-any-return]
    raise UnsupportedError(f"{name} tensors have no numpy dtype" + _hint(name))


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype for ckptio's `name`."""
    import torch

    attr = _TORCH.get(name)
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        raise UnsupportedError(
            f"{name} tensors have no dtype in torch {torch.__version__}" + _hint(name)
        )
    return dtype  # type: ignore[no-any-return]


def _hint(name: str) -> str:
    if name in _PACKED:
        return " (sub-byte elements, packed; read its raw bytes with Checkpoint.get_bytes)"
    return ""


def to_numpy(dtype: str, shape: list[int], buffer: Buffer) -> np.ndarray[Any, Any]:
    """The bytes of `buffer` as an array of `dtype` and `shape`, sharing its memory."""
    raw: np.ndarray[Any, Any] = np.asarray(buffer)
    return raw.view(numpy_dtype(dtype)).reshape(shape)


def to_torch(dtype: str, shape: list[int], buffer: Buffer) -> torch.Tensor:
    """The bytes of `buffer` as a tensor of `dtype` and `shape`, sharing its memory."""
    import torch

    target = torch_dtype(dtype)
    if len(buffer) == 0:
        return torch.empty(shape, dtype=target)
    raw = torch.from_numpy(np.asarray(buffer))
    return raw.view(target).reshape(shape)


def convert(framework: str, dtype: str, shape: list[int], buffer: Buffer) -> Any:
    """`buffer` as `framework` wants it: `"pt"` (torch) or `"np"` (numpy)."""
    if framework == "pt":
        return to_torch(dtype, shape, buffer)
    return to_numpy(dtype, shape, buffer)


def framework_of(framework: str | None) -> str:
    """`"pt"` or `"np"`: what `framework` names, or torch when it is importable."""
    if framework in ("pt", "torch", "pytorch"):
        return "pt"
    if framework in ("np", "numpy"):
        return "np"
    if framework is None:
        try:
            import torch  # noqa: F401
        except ImportError:
            return "np"
        return "pt"
    raise ValueError(f"framework {framework!r}: 'pt' (torch) or 'np' (numpy)")


def _torch_names() -> dict[Any, str]:
    import torch

    out = {}
    for name, attr in _TORCH.items():
        dtype = getattr(torch, attr, None)
        if dtype is not None:
            out[dtype] = name
    return out


def is_tensor(value: Any) -> bool:
    """Whether `value` is a torch tensor or a numpy array."""
    if isinstance(value, np.ndarray):
        return True
    torch = _torch_if_loaded()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_if_loaded() -> Any:
    import sys

    return sys.modules.get("torch")


def lend(value: Any) -> TensorIn:
    """A torch tensor or numpy array lent to ckptio: contiguous, little-endian, on the CPU (a
    copy is made only when it is not), its memory kept alive until the save is done."""
    torch = _torch_if_loaded()
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type == "meta":
            raise UnsupportedError(
                "it is on the meta device, which holds no data (load or initialize it first)"
            )
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg()
        if not t.is_contiguous():
            t = t.contiguous()
        names = _torch_names()
        if t.dtype not in names:
            raise UnsupportedError(f"torch tensors of {t.dtype} cannot be saved by ckptio")
        nbytes = t.numel() * t.element_size()
        return TensorIn(names[t.dtype], list(t.shape), t.data_ptr(), nbytes, t)
    array = np.ascontiguousarray(value)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and np.little_endian is False):
        array = array.astype(array.dtype.newbyteorder("<"))
    name = _numpy_name(array.dtype)
    address = array.__array_interface__["data"][0]
    return TensorIn(name, list(array.shape), address, array.nbytes, array)


def _numpy_name(dtype: np.dtype[Any]) -> str:
    for name, np_type in _NUMPY.items():
        if np.dtype(np_type) == dtype.newbyteorder("="):
            return name
    for name, ml_name in _ML_DTYPES.items():
        if dtype.name == ml_name:
            return name
    raise UnsupportedError(f"numpy arrays of {dtype} cannot be saved by ckptio")
