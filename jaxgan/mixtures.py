"""The 2-D Gaussian-mixture mode-collapse benchmark (the PacGAN / VEEGAN protocol).

`ring`: 8 Gaussians on the unit circle at angles 2*pi*i/8, std 0.01.
`grid`: 25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05.

`mode_metrics` assigns each generated sample to its nearest mode; a sample is
high quality (HQ) within 3 std of it; a mode is captured when it has at least
one HQ sample; the reverse KL is KL(p || uniform) of the histogram of HQ
samples over the modes (sum of p_k log(K p_k) over modes with p_k > 0), and
log K (its worst value, all mass on one mode) when there is no HQ sample at all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def ring_modes(n: int = 8, radius: float = 1.0) -> np.ndarray:
  angles = 2 * np.pi * np.arange(n) / n  # n distinct angles (not linspace with both ends)
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_modes(values=(-4.0, -2.0, 0.0, 2.0, 4.0)) -> np.ndarray:
  return np.array([(x, y) for x in values for y in values], np.float64)


MIXTURES = {"ring": (ring_modes, 0.01), "grid": (grid_modes, 0.05)}


def mixture(name: str) -> tuple[np.ndarray, float]:
  """(modes [K, 2], std) of the mixture called `name`."""
  if name not in MIXTURES:
    raise ValueError(f"unknown mixture {name!r}; choose one of {', '.join(MIXTURES)}")
  modes, std = MIXTURES[name]
  return modes(), std


def sample(key: jax.Array, modes: np.ndarray, std: float, num: int) -> jax.Array:
  """`num` points of the equal-weight mixture: [num, 2] float32."""
  k_mode, k_noise = jax.random.split(key)
  centres = jnp.asarray(modes, jnp.float32)[jax.random.randint(k_mode, (num,), 0, len(modes))]
  return centres + std * jax.random.normal(k_noise, (num, 2), jnp.float32)


def nearest_modes(samples: np.ndarray, modes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each sample's nearest mode (index) and its distance to it."""
  distances = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)
  nearest = distances.argmin(axis=1)
  return nearest, distances[np.arange(len(samples)), nearest]


def mode_metrics(samples, modes: np.ndarray, std: float) -> dict[str, float]:
  """{"modes": captured modes, "hq": fraction of HQ samples, "reverse_kl": KL(p || uniform)}."""
  samples = np.asarray(samples, np.float64)
  nearest, distance = nearest_modes(samples, modes)
  hq = distance <= 3 * std
  counts = np.bincount(nearest[hq], minlength=len(modes)).astype(np.float64)
  if counts.sum() == 0:
    return {"modes": 0.0, "hq": 0.0, "reverse_kl": float(np.log(len(modes)))}
  p = counts / counts.sum()
  nz = p > 0
  return {"modes": float(nz.sum()), "hq": float(hq.mean()),
          "reverse_kl": float(np.sum(p[nz] * np.log(len(modes) * p[nz])))}


# Distance bands for `distance_profile`, in the mixture's stds: HQ ends at 3; past 10 a sample
# lies between modes (neighbouring modes are 40 std apart on the grid, 77 on the ring).
DISTANCE_BANDS = (1.5, 3.0, 4.0, 6.0, 10.0)


def distance_profile(samples, modes: np.ndarray, std: float,
                     bands: tuple[float, ...] = DISTANCE_BANDS) -> dict:
  """Where samples lie around their nearest modes: why HQ is low, when it is.

  "fractions": the share of samples whose distance to the nearest mode, in stds, falls in
  [0, bands[0]), [bands[0], bands[1]), ..., [bands[-1], inf). True samples put
  1 - exp(-b^2 / 2) within b (2-D Gaussians) and none past 6; samples strung between modes
  by a continuous G fill the last band. "spread": the per-axis std of the samples within
  6 std of their mode, over `std`, averaged over modes with at least 10 of them: 1 for the
  mixture, above 1 for blurred modes, below for modes squeezed to a point.
  """
  samples = np.asarray(samples, np.float64)
  nearest, distance = nearest_modes(samples, modes)
  nearest_d = distance / std
  counts = np.histogram(nearest_d, bins=[0.0, *bands, np.inf])[0]
  spreads = [np.std(samples[sel] - modes[k], axis=0).mean() / std
             for k in range(len(modes)) if (sel := (nearest == k) & (nearest_d < 6)).sum() >= 10]
  return {"bands": list(bands), "fractions": (counts / len(samples)).tolist(),
          "spread": float(np.mean(spreads)) if spreads else float("nan")}
