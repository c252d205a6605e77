"""Evaluating a generator: FID, KID, Inception Score, precision/recall under a recorded protocol.

`Evaluator(config)` loads the feature network (`config.eval.features`) and the
reference features of the run's dataset, computed once and cached under
`<cache>/reference/`, keyed by the data source, split, crop, image size, number
of images and the network's weights. `evaluator(generate_fn, step)` draws
`eval.num_samples` images from a fixed noise set, scores them, and returns
the metrics with the protocol that produced them (`evaluator.score(sample_fn, ...)`
scores any other sampler, such as discriminator rejection sampling); `write_result` stores
them as `eval/<step>.json`. The training loop (`config.eval_every`) and
`python -m experiments.evaluate` both use it.

Metric names: with the official FID Inception weights, `fid`, `kid`, `is`,
`precision`, `recall`; with any other network N they are `fd_N`, `kd_N`,
`score_N`, `precision_N`, `recall_N`: Frechet/kernel distances in other
features are not FID/KID and not comparable with published numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgan import input_pipeline
from jaxgan.errors import ConfigError, check_positive_ints
from jaxgan.metrics import features as features_lib
from jaxgan.metrics import scores, weights
from jaxgan.train import latent_sampler

log = logging.getLogger(__name__)

REFERENCE_FORMAT = 1  # bump when what the reference cache stores changes


def default_config() -> ml_collections.ConfigDict:
  """The `eval` section of a run's config (see the module docstring)."""
  e = ml_collections.ConfigDict()
  e.features = "inception"  # or "package.module:factory" returning a feature network
  e.weights = ""  # FID Inception .pth ("" = $JAXGAN_FID_WEIGHTS, the caches, or download)
  e.download = True  # fetch pytorch-fid's weights when they are nowhere on disk
  e.num_samples = 10_000  # generated images per evaluation
  e.num_reference = 50_000  # real images for the reference features (fewer if the split is smaller)
  e.split = ""  # reference split of a tfds dataset ("" = data.split)
  e.batch_size = 200  # images per feature-network batch (split over the local devices)
  e.ema = True  # score the EMA generator when the run keeps one
  e.seed = 0  # the noise of the generated samples (the same at every evaluation)
  e.kid_subsets = 100
  e.kid_subset_size = 1000
  e.pr_k = 3  # neighbourhood of precision/recall
  e.inception_score_splits = 10
  e.cache_dir = ""  # reference features cache ("" = $JAXGAN_CACHE_DIR or ~/.cache/jaxgan)
  return e


def validate_config(e: ml_collections.ConfigDict) -> None:
  check_positive_ints(e, ("num_samples", "num_reference", "batch_size", "kid_subsets",
                          "kid_subset_size", "pr_k", "inception_score_splits"), "config.eval.")
  if e.num_samples <= e.pr_k:
    raise ConfigError(f"config.eval.num_samples={e.num_samples} must exceed config.eval.pr_k={e.pr_k}")


def metric_names(network) -> dict[str, str]:
  """Role -> metric name: plain names only for the official FID Inception."""
  if network.is_fid:
    return {"fd": "fid", "kd": "kid", "score": "is", "precision": "precision", "recall": "recall"}
  n = network.name
  return {"fd": f"fd_{n}", "kd": f"kd_{n}", "score": f"score_{n}", "precision": f"precision_{n}",
          "recall": f"recall_{n}"}


def primary_metric(network) -> str:
  """The metric that picks the `best` checkpoint (lower is better)."""
  return metric_names(network)["fd"]


def _gather(x: np.ndarray, rows_per_process: int) -> np.ndarray:
  """Concatenates every process's rows (process order); a no-op with one process.

  Each process holds at most `rows_per_process` rows; shorter shares are padded
  with NaN rows for the all-gather, which are dropped again.
  """
  if jax.process_count() == 1:
    return x
  from jax.experimental import multihost_utils

  padded = np.full((rows_per_process, *x.shape[1:]), np.nan, np.float32)
  padded[:len(x)] = x
  gathered = np.asarray(multihost_utils.process_allgather(padded, tiled=True))
  return gathered[~np.isnan(gathered).all(axis=tuple(range(1, gathered.ndim)))]


def _process_share(n: int) -> tuple[int, int, int]:
  """(start, stop, rows per process) of this process's contiguous share of n items."""
  per = math.ceil(n / jax.process_count())
  start = min(n, jax.process_index() * per)
  return start, min(n, start + per), per


class Reference:
  """Reference features of a dataset split, and their statistics when there are enough."""

  def __init__(self, feats: np.ndarray, protocol: dict):
    self.features = feats
    self.protocol = protocol
    self.stats = (scores.feature_statistics(feats)
                  if len(feats) >= max(feats.shape[1], 2) else None)


def reference_features(config: ml_collections.ConfigDict, network) -> Reference:
  """The reference features of `config.data` (computed once, then read from the cache)."""
  e, d, m = config.eval, config.data, config.model
  data = ml_collections.ConfigDict(d.to_dict())
  data.split = e.split or d.split
  source = input_pipeline.make_source(data, m.image_size, m.channels, config.seed)
  pipeline = input_pipeline.ImagePipeline(
      source, global_batch_size=1, image_size=m.image_size, channels=m.channels, crop=d.crop,
      num_workers=d.num_workers, max_bad_fraction=d.max_bad_fraction,
      cache_dir=d.cache_dir or None)
  n = len(pipeline.source)
  count = min(e.num_reference, n)
  indices = (np.arange(n) if count == n
             else np.sort(np.random.default_rng(0).choice(n, count, replace=False)))
  describe = getattr(source, "describe", lambda: type(source).__name__)()
  protocol = {"source": describe, "split": data.split if d.source == "tfds" else None,
              "crop": d.crop, "image_size": m.image_size, "channels": m.channels,
              "num_images": count, "selection": "all" if count == n else
              "a random subset (numpy default_rng(0), without replacement)",
              "feature_network": network.name, "weights_sha256": network.digest,
              "format": REFERENCE_FORMAT}
  key = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:20]
  cache = (pathlib.Path(e.cache_dir).expanduser() if e.cache_dir else weights.cache_dir())
  path = cache / "reference" / f"{network.name}-{key}.npz"
  protocol["cache_key"] = key
  if path.is_file():
    with np.load(path, allow_pickle=False) as f:
      feats = f["features"]
    log.info("reference features: %d images from the cache %s", len(feats), path)
    return Reference(feats, {**protocol, "num_readable": len(feats)})
  t0 = time.perf_counter()
  log.info("computing reference features of %d images (%s), once; cached in %s", count,
           describe, path)
  lo, hi, per = _process_share(count)
  parts = []
  step = max(e.batch_size, 1)
  for start in range(lo, hi, step):
    images = pipeline.images(indices[start:min(hi, start + step)])
    if len(images):
      parts.append(network(images)[network.feature_key])
  local = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
  feats = _gather(local, per)
  if not len(feats):
    raise ConfigError(f"none of the {count} reference images could be read")
  log.info("reference features: %d images in %.1fs (%d unreadable)", len(feats),
           time.perf_counter() - t0, pipeline.num_bad)
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=feats)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(protocol, indent=2) + "\n")
  return Reference(feats, {**protocol, "num_readable": len(feats)})


@functools.partial(jax.jit, static_argnums=(2, 3))
def _noise(key: jax.Array, indices: jax.Array, latent_dim: int, distribution: str) -> jax.Array:
  # Sample i's noise depends on (key, i) only: not on the batch size or the number of processes.
  sampler = latent_sampler(distribution)
  return jax.vmap(lambda i: sampler(jax.random.fold_in(key, i), (latent_dim,)))(indices)


def evaluation_noise(seed: int, start: int, stop: int, latent_dim: int,
                     distribution: str = "normal") -> jax.Array:
  """z (N(0, I), or U(-1, 1) with distribution="uniform") of generated samples start..stop-1
  of an evaluation with noise seed `seed`."""
  key = jax.random.fold_in(jax.random.key(seed), 2)
  return _noise(key, jnp.arange(start, stop), latent_dim, distribution)


def generated_outputs(sample_fn: Callable[[int, int], jax.Array | np.ndarray], network, num: int,
                      batch_size: int) -> dict[str, np.ndarray]:
  """The network's outputs on `num` generated images, `batch_size` at a time.

  `sample_fn(start, stop)` gives images in [-1, 1] of samples start..stop-1, or more rows
  (a whole batch), of which the first stop - start are used. Each process draws its share.
  """
  lo, hi, per = _process_share(num)
  outputs: list[dict] = []
  for start in range(lo, hi, batch_size):
    stop = min(hi, start + batch_size)
    images = np.asarray(features_lib.to_uint8(sample_fn(start, stop)))[:stop - start]
    outputs.append(network(images))
  keys = [k for k in (network.feature_key, network.logits_key) if k]
  return {k: _gather(np.concatenate([o[k] for o in outputs]), per) for k in keys}


class Evaluator:
  """Scores generators of one run's config against its dataset, with one protocol."""

  def __init__(self, config: ml_collections.ConfigDict, network=None):
    self.config = config
    self.e = e = config.eval
    validate_config(e)
    self.network = network or features_lib.resolve(e.features, e.weights, e.batch_size,
                                                   e.download)
    self.names = metric_names(self.network)
    self.reference = reference_features(config, self.network)

  def __call__(self, generate_fn: Callable[[jax.Array], jax.Array], step: int,
               ema: bool = False) -> dict:
    """Scores `generate_fn(z)` (images in [-1, 1]) on the protocol's fixed noise."""
    e = self.e

    def sample(start, stop):
      # Whole batches keep one compiled shape: the last one is filled up, then cut.
      return generate_fn(evaluation_noise(e.seed, start, start + e.batch_size,
                                          self.config.latent_dim,
                                          self.config.get("latent_distribution", "normal")))

    return self.score(sample, step, {"ema": bool(ema), "sample_seed": e.seed})

  def score(self, sample_fn: Callable[[int, int], jax.Array | np.ndarray], step: int,
            sampler: dict) -> dict:
    """Scores the images `sample_fn(start, stop)` draws (see `generated_outputs`); `sampler`
    describes how they were drawn, for the result's protocol."""
    e, net = self.e, self.network
    t0 = time.perf_counter()
    out = generated_outputs(sample_fn, net, e.num_samples, e.batch_size)
    fake, real = out[net.feature_key], self.reference.features
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    names = self.names
    try:
      if self.reference.stats is None:
        raise ConfigError(f"the reference has {len(real)} images, fewer than the feature dimension "
                          f"{real.shape[1]}: raise config.eval.num_reference or use a larger split")
      mu, sigma = scores.feature_statistics(fake)
      metrics[names["fd"]] = scores.frechet_distance(mu, sigma, *self.reference.stats)
    except ConfigError as err:
      skipped[names["fd"]] = str(err)
      log.warning("%s not computed: %s", names["fd"], err)
    kid_mean, kid_std = scores.kernel_inception_distance(
        fake, real, e.kid_subsets, e.kid_subset_size)
    metrics[names["kd"]], metrics[names["kd"] + "_std"] = kid_mean, kid_std
    if net.logits_key:
      splits = min(e.inception_score_splits, len(fake))
      metrics[names["score"]], metrics[names["score"] + "_std"] = scores.inception_score(
          out[net.logits_key], splits)
    if len(real) > e.pr_k:
      metrics[names["precision"]], metrics[names["recall"]] = scores.precision_recall(
          real, fake, e.pr_k)
    else:
      skipped[names["precision"]] = f"needs more than {e.pr_k} reference images"
    protocol = {
        "feature_network": net.name, "is_fid": bool(net.is_fid), "weights_sha256": net.digest,
        "num_samples": int(len(fake)), **sampler,
        "reference": self.reference.protocol,
        "kid": {"subsets": e.kid_subsets,
                "subset_size": min(e.kid_subset_size, len(fake), len(real)),
                "kernel": "(x.y/d + 1)^3", "estimator": "unbiased", "seed": scores.KID_SEED},
        "precision_recall_k": e.pr_k,
        "inception_score_splits": min(e.inception_score_splits, len(fake)),
        "input": "uint8 images (generated in [-1, 1], rounded as when saved as PNG)",
    }
    if not net.is_fid:
      protocol["note"] = (f"distances in {net.name} features: not FID/KID, not comparable with "
                          "published numbers")
    return {"step": int(step), "metrics": metrics, "skipped": skipped, "protocol": protocol,
            "seconds": round(time.perf_counter() - t0, 2)}


def write_result(workdir: str | pathlib.Path, result: dict, suffix: str = "") -> pathlib.Path:
  """Writes `eval/<step><suffix>.json` atomically; returns its path."""
  directory = pathlib.Path(workdir) / "eval"
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"{result['step']}{suffix}.json"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(result, indent=2) + "\n")
  tmp.replace(path)
  return path


def summary_line(result: dict) -> str:
  return f"eval step {result['step']}: " + ", ".join(
      f"{k} {v:.4g}" for k, v in result["metrics"].items() if not k.endswith("_std"))
