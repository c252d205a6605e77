"""Sample-quality scores computed from features: FID, KID, Inception Score, precision/recall.

Each takes features (any network's, see `jaxgan.metrics.FeatureNetwork`), so
the scores are only as "Inception" as the features given to them.

- `frechet_distance`: pytorch-fid's formula, in float64, with the matrix square
  root taken through symmetric eigendecompositions (no complex numbers).
- `kernel_inception_distance`: the unbiased MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / d + 1)^3 over random subsets (Binkowski et al. 2018),
  drawing subsets as torch-fidelity does; Gram matrices on the accelerator.
- `inception_score`: exp(E KL(p(y|x) || p(y))) over `splits` consecutive splits.
- `precision_recall`: k-NN manifolds of Kynkaanniemi et al. 2019 (k=3).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.errors import ConfigError
from jaxgan.metrics.features import fixed_size_batches

HIGHEST = jax.lax.Precision.HIGHEST
KID_SEED = 2020  # torch-fidelity's default rng_seed: same subsets, same numbers


def _features(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
    raise ConfigError(f"{what} must be a float array [num_samples, dim], got {x.dtype} {x.shape}")
  if not np.isfinite(x).all():
    raise ConfigError(f"{what} contain NaN or inf values; check the images or the feature network")
  return x


def feature_statistics(features, min_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) in float64, as pytorch-fid's np.mean / np.cov(rowvar=False).

  Refuses fewer samples than `min_samples` (default: the feature dimension, 2,048
  for Inception): below it the covariance is singular and the FID meaningless.
  """
  f = _features(features, "features").astype(np.float64)
  n, d = f.shape
  need = d if min_samples is None else min_samples
  if n < max(need, 2):
    raise ConfigError(f"FID needs at least {max(need, 2):,} samples for a full-rank "
                      f"{d}-dimensional covariance, got {n:,}; use more samples (10,000 or "
                      "50,000 are customary) or KID, which works with fewer")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr sqrt(sigma1 sigma2) for covariance matrices.

  sigma1 sigma2 is similar to the symmetric PSD matrix A sigma2 A with
  A = sqrt(sigma1), so the trace is the sum of the square roots of its
  eigenvalues: no Schur form, no imaginary parts; rounding that makes an
  eigenvalue slightly negative is clipped to 0.
  """
  a = _psd_sqrt(sigma1)
  m = a @ sigma2 @ a
  eigenvalues = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), in float64."""
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ConfigError(f"statistics do not match: means {mu1.shape} and {mu2.shape}, covariances "
                      f"{sigma1.shape} and {sigma2.shape}; compute both with the same network")
  for s in (mu1, mu2, sigma1, sigma2):
    if not np.isfinite(s).all():
      raise ConfigError("statistics contain NaN or inf values; recompute them")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_sqrt_product(sigma1, sigma2))


@jax.jit
def _grams(x, y):
  dot = functools.partial(jnp.matmul, precision=HIGHEST)
  return dot(x, x.T), dot(y, y.T), dot(x, y.T)


def kernel_inception_distance(features1, features2, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = KID_SEED) -> tuple[float, float]:
  """(mean, std) of the unbiased MMD^2 over `num_subsets` random subsets (KID).

  Kernel (x.y / d + 1)^3. Subsets are drawn as torch-fidelity draws them
  (np.random.RandomState(seed), features1's subset then features2's, without
  replacement), so with the same seed the numbers match its
  `kid_features_to_metric`. `subset_size` is lowered to the smaller sample
  count when there are fewer samples (KID works with a few hundred).
  """
  f1, f2 = _features(features1, "features1"), _features(features2, "features2")
  if f1.shape[1] != f2.shape[1]:
    raise ConfigError(f"features1 and features2 have dimensions {f1.shape[1]} and {f2.shape[1]}")
  m = min(subset_size, len(f1), len(f2))
  if m < 2:
    raise ConfigError(f"KID needs at least 2 samples on each side, got {len(f1)} and {len(f2)}")
  d = f1.shape[1]
  rng = np.random.RandomState(seed)
  mmds = np.zeros(num_subsets)
  for i in range(num_subsets):
    x = f1[rng.choice(len(f1), m, replace=False)].astype(np.float32)
    y = f2[rng.choice(len(f2), m, replace=False)].astype(np.float32)
    gxx, gyy, gxy = (np.asarray(g, np.float64) for g in _grams(x, y))
    kxx, kyy, kxy = ((g / d + 1.0) ** 3 for g in (gxx, gyy, gxy))
    mmds[i] = ((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2.0 * kxy.sum() / (m * m))
  return float(mmds.mean()), float(mmds.std())


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` consecutive splits of exp(E_x KL(p(y|x) || p(y))), float64.

  `logits`: [N, classes] (the FID Inception's 1008 logits for the Inception
  Score; the softmax runs over all of them, as in the original code).
  """
  logits = _features(logits, "logits").astype(np.float64)
  n = len(logits)
  if not 1 <= splits <= n:
    raise ConfigError(f"inception_score needs 1 <= splits <= number of samples, got splits={splits} "
                      f"for {n} samples")
  log_p = logits - logits.max(axis=1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    lo, hi = i * n // splits, (i + 1) * n // splits
    q = p[lo:hi].mean(axis=0, keepdims=True)
    kl = (p[lo:hi] * (log_p[lo:hi] - np.log(q))).sum(axis=1).mean()
    scores.append(np.exp(kl))
  return float(np.mean(scores)), float(np.std(scores))


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_sq(block, points, k: int):
  """Squared distance from each row of `block` to its k-th nearest row of `points` (self = 0th)."""
  return -jax.lax.top_k(-_sq_distances(block, points), k + 1)[0][:, k]


def _sq_distances(a, b):
  ab = jnp.matmul(a, b.T, precision=HIGHEST)
  return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * ab, 0.0)


@jax.jit
def _inside_any(block, points, radii_sq):
  """Whether each row of `block` lies within radius_j of some point j."""
  return jnp.any(_sq_distances(block, points) <= radii_sq[None, :], axis=1)


def _radii_sq(points: np.ndarray, k: int, block_size: int) -> jnp.ndarray:
  out = [np.asarray(_kth_neighbour_sq(b, points, k))[:n]
         for b, n in fixed_size_batches(points, block_size)]
  return jnp.asarray(np.concatenate(out))


def _coverage(queries: np.ndarray, points: np.ndarray, radii_sq, block_size: int) -> float:
  hits = [np.asarray(_inside_any(b, points, radii_sq))[:n]
          for b, n in fixed_size_batches(queries, block_size)]
  return float(np.concatenate(hits).mean())


def precision_recall(real_features, fake_features, k: int = 3,
                     block_size: int = 1000) -> tuple[float, float]:
  """(precision, recall) of Kynkaanniemi et al. 2019.

  Precision: the fraction of fake samples inside the real manifold (the union
  of balls around each real sample reaching its k-th nearest real neighbour);
  recall: the fraction of real samples inside the fake manifold. Distances are
  computed on the accelerator in blocks of `block_size` rows.
  """
  real = _features(real_features, "real_features").astype(np.float32)
  fake = _features(fake_features, "fake_features").astype(np.float32)
  if real.shape[1] != fake.shape[1]:
    raise ConfigError(f"real and fake features have dimensions {real.shape[1]} and {fake.shape[1]}")
  if min(len(real), len(fake)) <= k:
    raise ConfigError(f"precision/recall with k={k} needs more than {k} samples on each side, "
                      f"got {len(real)} real and {len(fake)} fake")
  block = min(block_size, max(len(real), len(fake)))
  real_radii, fake_radii = _radii_sq(real, k, block), _radii_sq(fake, k, block)
  precision = _coverage(fake, jnp.asarray(real), real_radii, block)
  recall = _coverage(real, jnp.asarray(fake), fake_radii, block)
  return precision, recall
