"""Per-sample randomness that does not depend on how a batch is split over devices."""

from __future__ import annotations

from typing import Callable

import jax


def draw(sampler: Callable[[jax.Array, int], jax.Array], key: jax.Array, num: int,
         axis_name: str | None = None) -> jax.Array:
  """`sampler(key, n)` -> [n, ...] for this device's `num` rows of the global batch.

  Without `axis_name` that is `sampler(key, num)`. Under pmap/shard_map every
  device draws the whole global batch (num x axis size) and keeps its own slice,
  so sample i gets the same values whatever the number of devices.
  """
  if axis_name is None:
    return sampler(key, num)
  values = sampler(key, num * jax.lax.axis_size(axis_name))
  return jax.lax.dynamic_slice_in_dim(values, jax.lax.axis_index(axis_name) * num, num)
