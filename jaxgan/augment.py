"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake images.

D sees augmented images in both its update and G's, and the augmentations
are differentiable, so G's gradient flows through them. The transforms follow
the authors' reference implementation: `color` (brightness, saturation,
contrast), `translation` (shift by up to 1/8 of the size, zero fill) and
`cutout` (a zeroed square of half the size). Images are NHWC in [-1, 1].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgan import rng

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
  """"color,translation" -> ("color", "translation"); "" -> (); unknown names raise."""
  names = tuple(p.strip() for p in policy.split(",") if p.strip())
  unknown = [p for p in names if p not in POLICIES]
  if unknown:
    raise ValueError(f"unknown DiffAugment transform(s) {unknown}; choose from {', '.join(POLICIES)}")
  return names


def _uniform(key, n):
  return jax.random.uniform(key, (n, 1, 1, 1), jnp.float32)


def _randint(key, n, low, high):
  return jax.random.randint(key, (n,), low, high)


def color(x: jax.Array, key: jax.Array, axis_name: str | None = None) -> jax.Array:
  kb, ks, kc = jax.random.split(key, 3)
  b = x.shape[0]
  x = x + (rng.draw(_uniform, kb, b, axis_name) - 0.5)  # brightness
  mean = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean) * (rng.draw(_uniform, ks, b, axis_name) * 2.0) + mean  # saturation
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (rng.draw(_uniform, kc, b, axis_name) + 0.5) + mean  # contrast


def _shift(x: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
  """Each image shifted by its (dy, dx) pixels, zeros coming in."""
  _, h, w, _ = x.shape
  rows = jnp.arange(h)[None, :] - dy[:, None]  # source row of each output row
  cols = jnp.arange(w)[None, :] - dx[:, None]
  valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
  gathered = jax.vmap(lambda img, r, c: img[jnp.clip(r, 0, h - 1)][:, jnp.clip(c, 0, w - 1)])(
      x, rows, cols)
  return gathered * valid[..., None].astype(x.dtype)


def translation(x: jax.Array, key: jax.Array, axis_name: str | None = None,
                ratio: float = 0.125) -> jax.Array:
  b, h, w, _ = x.shape
  sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  dy = rng.draw(functools.partial(_randint, low=-sh, high=sh + 1), ky, b, axis_name)
  dx = rng.draw(functools.partial(_randint, low=-sw, high=sw + 1), kx, b, axis_name)
  return _shift(x, dy, dx)


def cutout(x: jax.Array, key: jax.Array, axis_name: str | None = None,
           ratio: float = 0.5) -> jax.Array:
  b, h, w, _ = x.shape
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  # The square's centre, as in the reference: offsets in [0, size + (1 - cut % 2)).
  cy = rng.draw(functools.partial(_randint, low=0, high=h + (1 - ch % 2)), ky, b, axis_name)
  cx = rng.draw(functools.partial(_randint, low=0, high=w + (1 - cw % 2)), kx, b, axis_name)
  cy, cx = cy[:, None, None], cx[:, None, None]
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
            & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
  return x * (~inside)[..., None].astype(x.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: jax.Array, key: jax.Array, policy: str | tuple[str, ...],
                 axis_name: str | None = None) -> jax.Array:
  """`x` [B, H, W, C] with the transforms of `policy` applied (fresh randomness per image;
  under `axis_name`, image i of the global batch gets the same draw on any device count)."""
  names = parse_policy(policy) if isinstance(policy, str) else policy
  if names and x.ndim != 4:
    raise ValueError(f"DiffAugment needs images [B, H, W, C], got samples of shape {x.shape}")
  for name, k in zip(names, jax.random.split(key, max(len(names), 1))):
    x = _TRANSFORMS[name](x, k, axis_name)
  return x
