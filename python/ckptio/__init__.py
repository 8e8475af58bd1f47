"""ckptio: ML checkpoints and model weights from local disk, S3, GCS, Azure and HTTP, read
lazily (only the tensors asked for move), pinned to one version of each object, in parallel,
with pickles interpreted and never executed; and written with atomic commits.

    import ckptio

    ckpt = ckptio.open("s3://bucket/run/step-1000/")        # metadata only
    w = ckpt.get_tensor("model/layers.0.attn.weight")       # this tensor's bytes only
    state = ckptio.load("gs://bucket/epoch=3.ckpt")         # as torch.load, nothing executed
    ckptio.save("s3://bucket/run/step-2000", state)         # committed atomically

Every function takes `storage_options` (a dict of strings: `endpoint`, `region`, credentials,
...) beside the environment's `AWS_*`, `GOOGLE_*`, `AZURE_*`.
"""

from ckptio._api import Checkpoint, TensorInfo, download, load, open, open_bytes, save, stream
from ckptio._ckptio import (
    ChangedError,
    CommittedError,
    CorruptError,
    Error,
    Opaque,
    TensorRef,
    TransportError,
    UnsafeError,
    UnsupportedError,
    __version__,
    cp,
    ls,
    rm,
    stat,
    verify,
    walk,
)
from ckptio._safe_open import safe_open

__all__ = [
    "ChangedError",
    "Checkpoint",
    "CommittedError",
    "CorruptError",
    "Error",
    "Opaque",
    "TensorInfo",
    "TensorRef",
    "TransportError",
    "UnsafeError",
    "UnsupportedError",
    "__version__",
    "cp",
    "download",
    "load",
    "ls",
    "open",
    "open_bytes",
    "rm",
    "safe_open",
    "save",
    "stat",
    "stream",
    "verify",
    "walk",
]
