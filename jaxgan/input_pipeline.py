"""Image input pipelines: tfds, a folder or zip of images, an npz array, or synthetic images.

Design (no TensorFlow, no tf.data): every source is a random-access sequence of
images, and global batch t of a run is a pure function of (seed, t):

- epoch e = t // steps_per_epoch visits the source in the order
  `np.random.default_rng([seed, e]).permutation(N)`; the remainder that does
  not fill a batch is dropped;
- process p of P takes rows [p * B/P, (p+1) * B/P) of each global batch;
- images are decoded and resized in a thread pool (PIL releases the GIL) and a
  background thread keeps a few batches ready, which are put on the device
  ahead of use (`prefetch_to_device`).

So the pipeline position is one integer (the number of global batches
consumed), stored in checkpoints: a resumed run sees exactly the data order of
an uninterrupted one. An unreadable image is skipped: it is counted and
replaced, deterministically, by the next readable image of the source; too
many bad images (more than `max_bad_fraction` of those read) stop the run.
An optional one-time cache stores the decoded, resized images as a .npy file
read by memory map, so later epochs and runs decode nothing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import logging
import os
import pathlib
import queue
import threading
import zipfile
from typing import Callable, Iterator, Protocol

import jax
import numpy as np
from PIL import Image

from jaxgan.errors import ConfigError, DataError, first_line

log = logging.getLogger(__name__)

SOURCES = ("tfds", "folder", "npz", "synthetic")
CROPS = ("center140", "none")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CELEBA_MANUAL_FILES = ("img_align_celeba.zip", "list_eval_partition.txt", "list_attr_celeba.txt",
                       "list_landmarks_align_celeba.txt", "identity_CelebA.txt")


class ImageSource(Protocol):
  """A random-access sequence of images; `source[i]` is a uint8 HWC array or a PIL image."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> np.ndarray | Image.Image: ...


# ----------------------------------------------------------------------------- sources


class FolderSource:
  """Every .jpg/.jpeg/.png/.webp file below a directory or inside a .zip, in sorted path order."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path).expanduser()
    if not self.path.exists():
      raise DataError(f"data.path {str(self.path)!r} does not exist; point it at a folder or .zip "
                      "of images")
    self._local = threading.local()
    if self.path.is_dir():
      self.is_zip = False
      self.names = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                          if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif zipfile.is_zipfile(self.path):
      self.is_zip = True
      with zipfile.ZipFile(self.path) as zf:
        self.names = sorted(i.filename for i in zf.infolist()
                            if not i.is_dir() and
                            os.path.splitext(i.filename)[1].lower() in IMAGE_SUFFIXES)
    else:
      raise DataError(f"data.path {str(self.path)!r} is neither a folder nor a .zip file")
    if not self.names:
      raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {str(self.path)!r}")

  def __len__(self):
    return len(self.names)

  def read_bytes(self, index: int) -> bytes:
    if not self.is_zip:
      return (self.path / self.names[index]).read_bytes()
    zf = getattr(self._local, "zip", None)
    if zf is None:  # one handle per thread: ZipFile reads are not thread-safe
      zf = self._local.zip = zipfile.ZipFile(self.path)
    return zf.read(self.names[index])

  def __getitem__(self, index):
    image = Image.open(io.BytesIO(self.read_bytes(index)))
    image.load()
    return image

  def describe(self):
    return f"folder:{self.path.resolve()}:{len(self)}"


class ArraySource:
  """Images held in a uint8 array [N, H, W, C] (or [N, H, W] for grayscale)."""

  def __init__(self, images: np.ndarray, name: str = "array"):
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0:
      raise DataError(f"{name}: expected a non-empty uint8 array [N, H, W, C], got "
                      f"{images.dtype} {images.shape}")
    self.images = images if images.ndim == 4 else images[..., None]
    self.name = name

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    return self.images[index]

  def describe(self):
    return f"{self.name}:{self.images.shape}"


def npz_source(path: str | os.PathLike) -> ArraySource:
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise DataError(f"data.path {str(path)!r} is not a file; the npz source needs an .npz with a "
                    "uint8 'images' array [N, H, W, C]")
  with np.load(path, allow_pickle=False) as npz:
    if "images" not in npz.files:
      raise DataError(f"{str(path)!r} has no 'images' array (it has: {', '.join(npz.files)})")
    return ArraySource(npz["images"], name=f"npz:{path.resolve()}")


class SyntheticSource:
  """Deterministic procedural images (a coloured ellipse on a gradient) for offline smoke runs."""

  def __init__(self, num_examples: int, image_size: int, channels: int, seed: int = 0):
    if num_examples < 1:
      raise ConfigError("data.num_examples must be >= 1 for the synthetic source")
    self.n, self.size, self.channels, self.seed = num_examples, image_size, channels, seed

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    rng = np.random.default_rng([self.seed, index])
    s = self.size
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1)
    background = rng.uniform(0, 255, 3)[None, None] * (0.5 + 0.5 * yy[..., None])
    cy, cx, ry, rx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), *rng.uniform(0.15, 0.35, 2)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image = np.where(inside[..., None], rng.uniform(0, 255, 3)[None, None], background)
    image = image.astype(np.uint8)
    return image[..., :1] if self.channels == 1 else image

  def describe(self):
    return f"synthetic:{self.n}:{self.size}:{self.channels}:{self.seed}"


class TfdsSource:
  """A tensorflow-datasets image dataset read through `tfds.data_source` (array_record, no TF)."""

  def __init__(self, name: str, split: str, data_dir: str | None, manual_dir: str | None,
               download: bool):
    import tensorflow_datasets as tfds  # imported here: only this source needs it

    self.name, self.split = name, split
    kwargs = dict(split=split, data_dir=data_dir or None)
    try:
      self.ds = tfds.data_source(name, download=False, **kwargs)
    except Exception as e:  # not prepared (or not prepared as array_record)
      if not download:
        raise DataError(f"tfds dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'}"
                        f" ({first_line(e)}); set data.download=True or prepare it") from None
      self._prepare(tfds, name, data_dir, manual_dir)
      self.ds = tfds.data_source(name, download=False, **kwargs)
    if len(self.ds) == 0:
      raise DataError(f"tfds dataset {name!r} split {split!r} is empty")

  @staticmethod
  def _prepare(tfds, name, data_dir, manual_dir):
    log.info("preparing tfds dataset %s (array_record) in %s", name, data_dir or "default data_dir")
    try:
      builder = tfds.builder(name, data_dir=data_dir or None, file_format="array_record")
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
    except ImportError as e:
      raise DataError(f"preparing tfds dataset {name!r} needs TensorFlow ({first_line(e)}): "
                      "pip install 'jaxgan[tf]', or use data.source=folder/npz") from None
    except Exception as e:
      if name.startswith("celeb_a"):
        raise DataError(
            f"could not download/prepare celeb_a ({first_line(e)}). CelebA is served from Google "
            "Drive, whose download quota often fails. Manual route: download "
            f"{', '.join(CELEBA_MANUAL_FILES)} from the CelebA page, put them in one folder and "
            "set data.manual_dir to it; or train straight from the zip with "
            "data.source=folder data.path=/path/to/img_align_celeba.zip") from None
      raise DataError(f"could not download/prepare tfds dataset {name!r}: {first_line(e)}") from None

  def __len__(self):
    return len(self.ds)

  def __getitem__(self, index):
    return np.asarray(self.ds[index]["image"])

  def describe(self):
    return f"tfds:{self.name}:{self.split}:{len(self)}"


def make_source(data, image_size: int, channels: int, seed: int = 0) -> ImageSource:
  """Builds the source named by `data.source` from the `data` config."""
  if data.source == "tfds":
    return TfdsSource(data.name, data.split, data.data_dir, data.manual_dir, data.download)
  if data.source in ("folder", "npz") and not data.path:
    raise ConfigError(f"data.source={data.source} needs data.path")
  if data.source == "folder":
    return FolderSource(data.path)
  if data.source == "npz":
    return npz_source(data.path)
  if data.source == "synthetic":
    return SyntheticSource(data.num_examples, image_size, channels, seed)
  raise ConfigError(f"unknown data.source {data.source!r}; choose one of {', '.join(SOURCES)}")


# ----------------------------------------------------------------------------- preprocessing


def preprocess(image: np.ndarray | Image.Image, image_size: int, channels: int,
               crop: str) -> np.ndarray:
  """Any image -> uint8 [image_size, image_size, channels].

  Grayscale/RGBA/palette images are converted to RGB (or to L for 1 channel).
  `center140`: the CelebA-64 protocol, a centred 140x140 crop then an
  antialiased (PIL bicubic) resize; `none`: only resized if needed.
  """
  if not isinstance(image, Image.Image):
    image = np.asarray(image)
    if crop == "none" and image.dtype == np.uint8 and image.shape == (image_size, image_size,
                                                                       channels):
      return image  # already in the target format (e.g. the decoded cache)
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    image = Image.fromarray(image)
  image = image.convert("L" if channels == 1 else "RGB")
  if crop == "center140":
    w, h = image.size
    if w < 140 or h < 140:
      raise ConfigError(f"an image of {w}x{h} is smaller than the 140x140 center crop; use "
                        "data.crop=none for images that are already cropped")
    left, top = (w - 140) // 2, (h - 140) // 2
    image = image.crop((left, top, left + 140, top + 140))
  elif crop != "none":
    raise ConfigError(f"unknown data.crop {crop!r}; choose one of {', '.join(CROPS)}")
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.BICUBIC)
  array = np.asarray(image, dtype=np.uint8)
  return array[..., None] if channels == 1 else array


# ----------------------------------------------------------------------------- the pipeline


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [-1, 1], as G's tanh output and D's inputs are."""
  return images.astype(np.float32) / 127.5 - 1.0


class ImagePipeline:
  """Deterministic, resumable batches of float32 images in [-1, 1], NHWC.

  `batch(t)` is this process's share of global batch t; `iterate(start)` yields
  batches start, start+1, ... with decoding in `num_workers` threads and
  `prefetch` batches prepared ahead in the background.
  """

  def __init__(self, source: ImageSource, *, global_batch_size: int, image_size: int,
               channels: int, crop: str = "none", seed: int = 0, process_index: int = 0,
               process_count: int = 1, num_workers: int = 4, prefetch: int = 2,
               max_bad_fraction: float = 0.01, cache_dir: str | None = None):
    if global_batch_size % process_count:
      raise ConfigError(f"batch_size {global_batch_size} is not divisible by the "
                        f"{process_count} processes")
    self.source = source
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.image_size, self.channels, self.crop, self.seed = image_size, channels, crop, seed
    self.process_index = process_index
    self.max_bad_fraction = max_bad_fraction
    self.prefetch = prefetch
    self._pool = concurrent.futures.ThreadPoolExecutor(max(1, num_workers),
                                                       thread_name_prefix="jaxgan-decode")
    self._lock = threading.Lock()
    self._bad: set[int] = set()
    self._tried: set[int] = set()
    self.num_bad_cached = 0
    if cache_dir:
      self.source = self._cached(pathlib.Path(cache_dir).expanduser())
      self.crop = "none"  # cached images are already cropped and resized
    if len(self.source) < global_batch_size:
      raise DataError(f"the source has {len(self.source)} images, fewer than one batch of "
                      f"{global_batch_size}; lower batch_size or add data")
    self.steps_per_epoch = len(self.source) // global_batch_size
    self._perm_epoch, self._perm = -1, None

  @property
  def num_bad(self) -> int:
    """Unreadable images skipped so far (including those dropped while building the cache)."""
    return len(self._bad) + self.num_bad_cached

  def _load(self, index: int) -> np.ndarray | None:
    try:
      return preprocess(self.source[index], self.image_size, self.channels, self.crop)
    except ConfigError:
      raise
    except Exception as e:  # corrupt, truncated or undecodable
      with self._lock:
        if index not in self._bad:
          self._bad.add(index)
          log.warning("skipping unreadable image #%d (%s)", index, first_line(e))
      return None

  def _load_good(self, index: int) -> np.ndarray:
    """The image at `index`, or the next readable one (deterministic replacement)."""
    n = len(self.source)
    for offset in range(n):
      i = (index + offset) % n
      with self._lock:
        self._tried.add(i)
        known_bad = i in self._bad
      image = None if known_bad else self._load(i)
      if image is not None:
        return image
    raise DataError("no image in the source could be read")

  def _check_bad_fraction(self):
    tried, bad = len(self._tried), len(self._bad)
    if tried >= min(100, len(self.source)) and bad > self.max_bad_fraction * tried:
      raise DataError(f"{bad} of {tried} images read so far are unreadable, more than "
                      f"data.max_bad_fraction={self.max_bad_fraction}; check the data or raise "
                      "the limit")

  def _indices(self, t: int) -> np.ndarray:
    epoch, j = divmod(t, self.steps_per_epoch)
    if epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
      self._perm_epoch = epoch
    start = j * self.global_batch_size + self.process_index * self.local_batch_size
    return self._perm[start:start + self.local_batch_size]

  def images(self, indices) -> np.ndarray:
    """uint8 [n, S, S, C]: the readable images among source `indices`, in order (unreadable
    ones are skipped, counted in `num_bad` and reported)."""
    loaded = [im for im in self._pool.map(self._load, indices) if im is not None]
    if not loaded:
      return np.zeros((0, self.image_size, self.image_size, self.channels), np.uint8)
    return np.stack(loaded)

  def batch(self, t: int) -> dict[str, np.ndarray]:
    """This process's rows of global batch `t`: {"image": float32 [B_local, S, S, C] in [-1, 1]}."""
    images = list(self._pool.map(self._load_good, self._indices(t)))
    self._check_bad_fraction()
    return {"image": to_unit_range(np.stack(images))}

  def iterate(self, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches start, start+1, ... prepared `prefetch` ahead in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
    stop = threading.Event()

    def produce():
      t = start
      while not stop.is_set():
        try:
          item = self.batch(t)
        except BaseException as e:  # hand errors to the consumer
          item = e
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if isinstance(item, BaseException):
          return
        t += 1

    thread = threading.Thread(target=produce, daemon=True, name="jaxgan-batches")
    thread.start()
    try:
      while True:
        item = q.get()
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()

  # --------------------------------------------------------------- decoded cache

  def _cached(self, cache_dir: pathlib.Path) -> ArraySource:
    """Decodes the whole source once into `cache_dir/<key>.npy` and reads it by memory map."""
    describe = getattr(self.source, "describe", None)
    if describe is None:
      raise ConfigError("this data source cannot be cached (it has no describe()); "
                        "unset data.cache_dir")
    key = hashlib.sha256(
        f"{describe()}|{self.image_size}|{self.channels}|{self.crop}".encode()).hexdigest()[:16]
    path = cache_dir / f"images-{key}.npy"
    bad_path = cache_dir / f"images-{key}.bad"
    if not path.exists():
      cache_dir.mkdir(parents=True, exist_ok=True)
      n = len(self.source)
      log.info("building the decoded-image cache %s (%d images)", path, n)
      images = list(self._pool.map(self._load, range(n)))
      good = [im for im in images if im is not None]
      if not good:
        raise DataError("no image in the source could be read")
      self._tried.update(range(n))
      self._check_bad_fraction()
      tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
      np.save(tmp, np.stack(good))
      bad_path.write_text(str(n - len(good)))
      os.replace(tmp, path)
      self._bad.clear()
      self._tried.clear()
    self.num_bad_cached = int(bad_path.read_text()) if bad_path.exists() else 0
    return ArraySource(np.load(path, mmap_mode="r"), name=f"cache:{path}")


def prefetch_to_device(batches: Iterator[dict], size: int = 2,
                       put: Callable[[dict], dict] = jax.device_put) -> Iterator[dict]:
  """Keeps `size` batches in flight to the devices (transfers are asynchronous).

  `put` moves one host batch to the devices, e.g. a data-parallel step's `shard_batch`.
  """
  pending: collections.deque = collections.deque()
  try:
    for batch in batches:
      pending.append(put(batch))
      if len(pending) > size:
        yield pending.popleft()
    while pending:
      yield pending.popleft()
  finally:  # closing this iterator stops the producer behind it
    close = getattr(batches, "close", None)
    if close is not None:
      close()
