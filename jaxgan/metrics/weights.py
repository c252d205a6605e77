"""Finding, verifying and reading the FID Inception weights without running pickled code.

The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`. `locate`
looks, in order, at an explicit path, `$JAXGAN_FID_WEIGHTS`, the jaxgan cache
(`$JAXGAN_CACHE_DIR`, default `~/.cache/jaxgan`) and torch hub's cache (where
pytorch-fid leaves it); when none has it, it downloads pytorch-fid's release
file and checks its sha256. A `.pth` is read with `torch.load(weights_only=True)`
when torch is installed, else with `read_torch_file`, an unpickler that only
rebuilds tensors. The converted weights are cached as `.npz` (no pickle), keyed
by the sha256 of the `.pth`, so later runs need neither torch nor the `.pth`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import pathlib
import pickle
import struct
import urllib.request
import zipfile
from typing import Any

import numpy as np

from jaxgan.errors import ConfigError, first_line

log = logging.getLogger(__name__)

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_NAME)
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch hub convention: the file name carries it
ENV_WEIGHTS = "JAXGAN_FID_WEIGHTS"
ENV_CACHE = "JAXGAN_CACHE_DIR"


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(ENV_CACHE) or "~/.cache/jaxgan").expanduser()


def torch_hub_dir() -> pathlib.Path:
  hub = os.environ.get("TORCH_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
  return pathlib.Path(hub).expanduser() / "hub" / "checkpoints"


def sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def is_official(digest: str) -> bool:
  """Whether a sha256 is that of pytorch-fid's FID weights (so the numbers are FID)."""
  return digest.startswith(FID_WEIGHTS_SHA256_PREFIX)


def _missing_message() -> str:
  return (f"the FID Inception weights {FID_WEIGHTS_NAME} are not here and could not be "
          f"downloaded from {FID_WEIGHTS_URL}; download it elsewhere and put it in "
          f"{cache_dir()}/, or pass its path (weights_path / --weights / ${ENV_WEIGHTS})")


def locate(path: str | os.PathLike | None = None, download: bool = True) -> pathlib.Path:
  """The weights file to use: `path`, `$JAXGAN_FID_WEIGHTS`, a cached copy, or a fresh download."""
  explicit = path or os.environ.get(ENV_WEIGHTS)
  if explicit:
    p = pathlib.Path(explicit).expanduser()
    if not p.is_file():
      raise ConfigError(f"FID weights file {p} does not exist; pass the path of {FID_WEIGHTS_NAME}")
    return p
  for candidate in (cache_dir() / FID_WEIGHTS_NAME, torch_hub_dir() / FID_WEIGHTS_NAME):
    if candidate.is_file():
      return candidate
  if not download:
    raise ConfigError(_missing_message())
  return _download(cache_dir() / FID_WEIGHTS_NAME)


def _download(target: pathlib.Path) -> pathlib.Path:
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(target.name + ".part")
  log.info("downloading %s", FID_WEIGHTS_URL)
  try:
    with urllib.request.urlopen(FID_WEIGHTS_URL, timeout=60) as response, open(tmp, "wb") as f:
      while chunk := response.read(1 << 20):
        f.write(chunk)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    raise ConfigError(f"{_missing_message()} ({first_line(e)})") from None
  digest = sha256(tmp)
  if not is_official(digest):
    tmp.unlink(missing_ok=True)
    raise ConfigError(f"the downloaded {FID_WEIGHTS_NAME} has sha256 {digest[:16]}..., not "
                      f"{FID_WEIGHTS_SHA256_PREFIX}...: a damaged or substituted file; try again")
  tmp.replace(target)
  return target


# ----------------------------------------------------------------------------- reading .pth files

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
  """Stands in for torch.FloatStorage & co.: only remembers the element dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused) -> np.ndarray:
  """torch._utils._rebuild_tensor_v2 for a numpy storage: a strided view, copied."""
  itemsize = storage.dtype.itemsize
  if not size:
    return storage[offset].copy()
  last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset
  if last >= storage.size:
    raise ValueError("a tensor reaches past the end of its storage")
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
  return data


class _TensorUnpickler(pickle.Unpickler):
  """Rebuilds a state dict of tensors as numpy arrays; refuses every other global."""

  ALLOWED = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  }

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage
    self.allowed = self.ALLOWED

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self.allowed:
      return self.allowed[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a weights file holds only "
                                 "tensors, and anything else could run code")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    return self._load_storage(*pid[1:])


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _read_zip(path: pathlib.Path) -> dict:
  with zipfile.ZipFile(path) as z:
    pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
      raise pickle.UnpicklingError("no data.pkl in the archive")
    prefix = pkl[0][: -len("data.pkl")]
    big_endian = z.read(prefix + "byteorder") == b"big" if prefix + "byteorder" in z.namelist() \
        else False
    cache: dict[str, np.ndarray] = {}

    def load_storage(storage_type: _StorageType, key: str, location, numel):
      if key not in cache:
        dtype = storage_type.dtype.newbyteorder(">" if big_endian else "<")
        cache[key] = np.frombuffer(z.read(f"{prefix}data/{key}"), dtype=dtype).astype(
            storage_type.dtype)
      return cache[key]

    return _TensorUnpickler(io.BytesIO(z.read(pkl[0])), load_storage).load()


class _LegacyTensor:
  """A tensor of a legacy file, rebuilt once its storage's bytes (after the pickle) are read."""

  def __init__(self, key: str, args: tuple):
    self.key, self.args = key, args


def _read_legacy(path: pathlib.Path) -> dict:
  """torch.save's format before PyTorch 1.6: magic, version, sys_info, the state dict, the
  storage keys (five pickles), then each storage as an int64 element count and its bytes."""
  with open(path, "rb") as f:
    header = _TensorUnpickler(f, None)
    if header.load() != _LEGACY_MAGIC:
      raise pickle.UnpicklingError("not a PyTorch file (no magic number)")
    header.load()  # protocol version
    header.load()  # sys_info
    types: dict[str, _StorageType] = {}

    def load_storage(storage_type, key, location, numel, view_metadata=None):
      if view_metadata is not None:
        raise pickle.UnpicklingError("storage views are not supported")
      types[key] = storage_type
      return key

    unpickler = _TensorUnpickler(f, load_storage)
    rebuild = lambda key, *args: _LegacyTensor(key, args)  # noqa: E731
    unpickler.allowed = {**_TensorUnpickler.ALLOWED, ("torch._utils", "_rebuild_tensor_v2"): rebuild,
                         ("torch._utils", "_rebuild_tensor"): rebuild}
    result = unpickler.load()
    keys = _TensorUnpickler(f, None).load()
    data = {}
    for key in keys:
      dtype = types[key].dtype
      (numel,) = struct.unpack("<q", f.read(8))
      buf = f.read(numel * dtype.itemsize)
      if len(buf) != numel * dtype.itemsize:
        raise pickle.UnpicklingError("the file is truncated")
      data[key] = np.frombuffer(buf, dtype.newbyteorder("<")).astype(dtype)
  if not isinstance(result, dict):
    return result
  return collections.OrderedDict(
      (k, _rebuild_tensor(data[v.key], *v.args) if isinstance(v, _LegacyTensor) else v)
      for k, v in result.items())


def _read_with_torch(path: pathlib.Path) -> dict:
  import torch  # optional: only when installed

  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, dict):
    return state
  return {k: v.detach().numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def read_torch_file(path: str | os.PathLike, use_torch: bool | None = None) -> dict[str, np.ndarray]:
  """A PyTorch state dict file (zip or legacy format) -> {name: numpy array}, running no code.

  `use_torch`: None uses `torch.load(weights_only=True)` when torch is installed,
  else the restricted unpickler; True/False force one.
  """
  path = pathlib.Path(path)
  if use_torch is None:
    try:
      import torch  # noqa: F401
      use_torch = True
    except ImportError:
      use_torch = False
  try:
    if use_torch:
      result = _read_with_torch(path)
    else:
      result = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, struct.error,
          RuntimeError) as e:
    raise ConfigError(f"cannot read {path} as a PyTorch weights file: {first_line(e)}") from None
  if not isinstance(result, dict):
    raise ConfigError(f"{path} holds a {type(result).__name__}, not a state dict of tensors")
  return dict(result)
