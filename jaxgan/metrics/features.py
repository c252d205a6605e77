"""Feature networks for the scores: the FID Inception, or any network you plug in.

A feature network is a callable `uint8 images [N, H, W, C] -> {name: [N, D]}`
with four attributes: `name` (labels its numbers), `feature_key` (the output
the distances use), `logits_key` (the output for the Inception Score, or None)
and `digest` (identifies the weights; keys the reference-statistics cache).
`is_fid` is True only for the FID Inception with pytorch-fid's official
weights: any other network gives Frechet distances that are not FID.

`BatchedApply` runs a Flax module over images in fixed-size batches, jitted and
split over the local devices, so every network gets the same speed path.
"""

from __future__ import annotations

import importlib
import logging
import os
import pathlib
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxgan.checkpointing import tree_digest
from jaxgan.errors import ConfigError
from jaxgan.metrics import inception, weights

log = logging.getLogger(__name__)


class FeatureNetwork(Protocol):
  name: str
  feature_key: str
  logits_key: str | None
  digest: str
  is_fid: bool

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


def check_images(images) -> np.ndarray:
  """uint8 [N, H, W, 1 or 3] or a clear one-line error (with the fix for float images)."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ConfigError(f"feature networks take uint8 images [N, H, W, C], got {images.dtype}; "
                      "convert images in [-1, 1] with jaxgan.metrics.to_uint8")
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ConfigError(f"feature networks take images [N, H, W, C] with C = 1 or 3, got shape "
                      f"{images.shape}")
  return images


def to_uint8(images) -> jax.Array:
  """Images in [-1, 1] -> uint8 [0, 255], rounded as when saving them as PNG (jit-able)."""
  return jnp.clip(jnp.round((jnp.asarray(images, jnp.float32) + 1.0) * 127.5), 0, 255).astype(
      jnp.uint8)


def fixed_size_batches(x: np.ndarray, size: int):
  """(batch, n) for consecutive slices of `x`: each batch has `size` rows (the last padded
  with zeros, so one compiled shape serves all), of which the first n are real."""
  for start in range(0, len(x), size):
    batch = x[start:start + size]
    n = len(batch)
    if n < size:
      batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
    yield batch, n


class BatchedApply:
  """`module.apply(variables, images)` over any number of images, batch by batch.

  Batches have one fixed size (the last is padded) so there is one compile;
  each batch is split over the local devices (a 1-D mesh), with the variables
  replicated. Outputs come back as float32 numpy arrays.
  """

  def __init__(self, module: nn.Module, variables: Any, batch_size: int = 200,
               devices: list | None = None):
    devices = devices or jax.local_devices()
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    self._data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    self.variables = jax.device_put(variables, replicated)
    self._apply = jax.jit(module.apply, in_shardings=(replicated, self._data),
                          out_shardings=replicated)

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    images = check_images(images)
    outputs: list[dict] = []
    for batch, n in fixed_size_batches(images, self.batch_size):
      out = self._apply(self.variables, jax.device_put(batch, self._data))
      outputs.append(jax.tree.map(lambda a, n=n: np.asarray(a, np.float32)[:n], out))
    if not outputs:
      raise ConfigError("no images given to the feature network")
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def _converted_path(digest: str) -> pathlib.Path:
  return weights.cache_dir() / f"fid_inception-{digest}.npz"


def load_fid_inception(weights_path: str | os.PathLike | None = None,
                       download: bool = True) -> tuple[dict, str]:
  """(Flax variables, sha256 of the .pth) of the FID Inception.

  The first use of a .pth converts it (no pickled code runs) and caches the
  result as `$JAXGAN_CACHE_DIR/fid_inception-<sha256>.npz`; later uses read that.
  With no .pth anywhere, a cached conversion of the official weights is used.
  """
  try:
    path = weights.locate(weights_path, download=False)
  except ConfigError:
    if weights_path or os.environ.get(weights.ENV_WEIGHTS):
      raise
    cached = sorted(weights.cache_dir().glob(
        f"fid_inception-{weights.FID_WEIGHTS_SHA256_PREFIX}*.npz"))
    if cached:
      return inception.load_variables(cached[0]), cached[0].stem.split("-", 1)[1]
    if not download:
      raise
    path = weights.locate(None, download=True)
  digest = weights.sha256(path)
  converted = _converted_path(digest)
  if converted.is_file():
    return inception.load_variables(converted), digest
  variables = inception.variables_from_state_dict(weights.read_torch_file(path), source=str(path))
  try:
    converted.parent.mkdir(parents=True, exist_ok=True)
    inception.save_variables(converted, variables)
  except OSError as e:  # a read-only cache costs a conversion per run, nothing more
    log.warning("could not cache the converted Inception weights in %s (%s)", converted, e)
  return variables, digest


class InceptionFeatures:
  """The FID Inception-v3 of pytorch-fid as a feature network.

      feats = InceptionFeatures()            # finds (or downloads) the weights
      out = feats(images_uint8_nhwc)         # any size: {"pool3": [N, 2048], "logits": [N, 1008]}

  `precision="highest"` keeps float32 convolutions exact on GPUs/TPUs (no
  TF32/bfloat16 passes), which the 1e-4 agreement with pytorch-fid needs.
  """

  name = "inception"
  feature_key = "pool3"
  logits_key = "logits"

  def __init__(self, weights_path: str | os.PathLike | None = None, *, batch_size: int = 200,
               download: bool = True, precision: str = "highest", devices: list | None = None):
    variables, self.digest = load_fid_inception(weights_path, download)
    self.is_fid = weights.is_official(self.digest)
    if not self.is_fid:
      log.warning("these Inception weights (sha256 %s...) are not pytorch-fid's %s: the distances "
                  "they give are not FID", self.digest[:12], weights.FID_WEIGHTS_NAME)
    if precision not in ("default", "high", "highest"):
      raise ConfigError(f"precision={precision!r} is unknown; choose default, high or highest")
    module = inception.FIDInceptionV3(precision=jax.lax.Precision[precision.upper()])
    self._apply = BatchedApply(module, variables, batch_size, devices)

  def __call__(self, images) -> dict[str, np.ndarray]:
    return self._apply(images)


class ModuleFeatures:
  """Any Flax module as a feature network (e.g. a domain classifier where Inception
  weights are not available): `module.apply(variables, uint8 images)` must return
  a dict holding `feature_key` (and `logits_key`, if given)."""

  is_fid = False

  def __init__(self, name: str, module: nn.Module, variables: Any, *, feature_key: str = "features",
               logits_key: str | None = None, digest: str | None = None, batch_size: int = 200,
               devices: list | None = None):
    self.name, self.feature_key, self.logits_key = name, feature_key, logits_key
    self.digest = digest or tree_digest(variables)
    self._apply = BatchedApply(module, variables, batch_size, devices)

  def __call__(self, images) -> dict[str, np.ndarray]:
    return self._apply(images)


def resolve(spec: str, weights_path: str | None = None, batch_size: int = 200,
            download: bool = True) -> FeatureNetwork:
  """A feature network from its config name: "inception", or "package.module:factory" where
  `factory()` returns a feature network (see the module docstring)."""
  if spec == "inception":
    return InceptionFeatures(weights_path or None, batch_size=batch_size, download=download)
  module_name, _, attr = spec.partition(":")
  if not module_name or not attr:
    raise ConfigError(f"unknown feature network {spec!r}; use 'inception' or 'package.module:factory'")
  try:
    factory: Callable[[], FeatureNetwork] = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f"cannot load the feature network {spec!r}: {e}") from None
  network = factory()
  for attribute in ("name", "feature_key", "logits_key", "digest", "is_fid"):
    if not hasattr(network, attribute):
      raise ConfigError(f"the feature network from {spec!r} has no attribute {attribute!r}; "
                        "see jaxgan.metrics.FeatureNetwork")
  return network
