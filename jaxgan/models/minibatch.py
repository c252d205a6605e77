"""Discriminator blocks that let D look at the whole minibatch, a remedy for mode collapse.

- `MinibatchDiscrimination` (Salimans et al. 2016, "Improved Techniques for
  Training GANs", section 3.2): features f [B, A] are projected by a learned
  tensor T to M [B, K, C]; for each kernel k, o_k(x_i) = sum_{j != i}
  exp(-||M_i,k - M_j,k||_1). D's logit gets a learned linear term in o (the
  same as appending o to the features of D's last linear layer).
- `MinibatchStdDev` (Karras et al. 2018, ProGAN, section 3): the standard
  deviation of every feature over groups of `group_size` consecutive samples,
  averaged to one number per group and appended as an extra feature/channel.

Both keep the step's global view under `pmap`: with `axis_name`, minibatch
discrimination compares each sample with the whole global batch (an
all_gather), and the stddev groups are consecutive samples inside a device's
rows (so any split whose per-device rows are a multiple of `group_size`
gives the same groups).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MINIBATCH_KINDS = ("none", "stddev", "discrimination")


def check_kind(kind: str) -> str:
  if kind not in MINIBATCH_KINDS:
    raise ValueError(f"unknown minibatch feature {kind!r}; choose one of {', '.join(MINIBATCH_KINDS)}")
  return kind


class MinibatchDiscrimination(nn.Module):
  """f [B, ...] -> o [B, num_kernels]: each sample's closeness to the rest of the batch."""
  num_kernels: int = 50
  kernel_dim: int = 5
  axis_name: str | None = None

  @nn.compact
  def __call__(self, f):
    f = f.reshape(f.shape[0], -1)
    t = self.param("T", nn.initializers.normal(0.05), (f.shape[-1], self.num_kernels * self.kernel_dim))
    m = (f @ t.astype(f.dtype)).reshape(f.shape[0], self.num_kernels, self.kernel_dim)
    others = m if self.axis_name is None else jax.lax.all_gather(m, self.axis_name, tiled=True)
    l1 = jnp.sum(jnp.abs(m[:, None] - others[None]), axis=-1)  # [B, B_global, K]
    return jnp.sum(jnp.exp(-l1), axis=1) - 1.0  # minus the sample's own term exp(0)


class MinibatchStdDev(nn.Module):
  """x [B, ..., C] -> [B, ..., C + 1]: appends the mean over features of the per-group std."""
  group_size: int = 4

  @nn.compact
  def __call__(self, x):
    b = x.shape[0]
    g = min(self.group_size, b)
    if b % g:  # (a batch smaller than the group is one group, as in ProGAN)
      raise ValueError(f"minibatch stddev needs a batch (per device) divisible by its group size "
                       f"{g}, got {b} rows; change the batch size or group_size")
    groups = x.astype(jnp.float32).reshape(b // g, g, *x.shape[1:])
    std = jnp.sqrt(jnp.var(groups, axis=1) + 1e-8)  # [B/g, ...]
    value = jnp.mean(std.reshape(b // g, -1), axis=1)  # one number per group
    feature = jnp.broadcast_to(jnp.repeat(value, g)[(...,) + (None,) * (x.ndim - 1)],
                               (*x.shape[:-1], 1))
    return jnp.concatenate([x, feature.astype(x.dtype)], axis=-1)
