"""Multi-layer perceptrons for low-dimensional data (2-D Gaussian mixtures and the like)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxgan.models import layers
from jaxgan.models.minibatch import MinibatchDiscrimination, MinibatchStdDev, check_kind


def _kernel_init(init_std: float | None):
  """N(0, init_std^2) weights (PacGAN's toy models use 0.02); None = flax's LeCun normal."""
  return nn.initializers.lecun_normal() if init_std is None else nn.initializers.normal(init_std)


class MLPGenerator(nn.Module):
  """z [B, nz] -> samples [B, *data_shape]; hidden layers ReLU (optionally BatchNorm first)."""
  data_shape: Sequence[int] = (2,)
  hidden_dims: Sequence[int] = (128, 128, 128)
  batch_norm: bool = False
  axis_name: str | None = None
  init_std: float | None = None

  @nn.compact
  def __call__(self, z, train: bool = True):
    x = z
    init = _kernel_init(self.init_std)
    for width in self.hidden_dims:
      x = nn.Dense(width, use_bias=not self.batch_norm, kernel_init=init)(x)
      if self.batch_norm:
        x = layers.batch_norm(train, self.axis_name)(x)
      x = nn.relu(x)
    x = nn.Dense(int(np.prod(self.data_shape)), kernel_init=init)(x)
    return x.reshape(x.shape[0], *self.data_shape)


class MLPDiscriminator(nn.Module):
  """samples [B, ...] -> logits [B]; hidden layers LeakyReLU(0.2), or maxout units
  (the max of `maxout` linear pieces, Goodfellow et al. 2013) when `maxout` > 1.

  The last hidden layer is sown as `intermediates/features`; `minibatch`
  ("stddev" | "discrimination") adds a minibatch feature after it.
  """
  hidden_dims: Sequence[int] = (128, 128, 128)
  maxout: int = 1
  init_std: float | None = None
  minibatch: str = "none"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.reshape(x.shape[0], -1)
    init = _kernel_init(self.init_std)
    for width in self.hidden_dims:
      if self.maxout > 1:
        x = nn.Dense(width * self.maxout, kernel_init=init)(x)
        x = x.reshape(x.shape[0], width, self.maxout).max(-1)
      else:
        x = nn.leaky_relu(nn.Dense(width, kernel_init=init)(x), 0.2)
    self.sow("intermediates", "features", x)
    features = x
    if check_kind(self.minibatch) == "stddev":
      x = MinibatchStdDev()(x)
    logit = nn.Dense(1, kernel_init=init)(x)[:, 0]
    if self.minibatch == "discrimination":
      o = MinibatchDiscrimination(axis_name=self.axis_name)(features)
      logit = logit + nn.Dense(1, use_bias=False, kernel_init=init, name="minibatch_out")(o)[:, 0]
    return logit.astype(jnp.float32)
