"""DCGAN (Radford et al. 2016) with the structure of pytorch/examples' `dcgan`.

At the defaults (64x64x3, nz=100, ngf=ndf=64) G has 3,576,704 parameters and D
2,765,568, as in PyTorch. D returns one logit per image (no sigmoid): the losses
use the numerically stable log-sigmoid forms. Other resolutions (any power of
two >= 8) add or drop stride-2 stages, keeping widths ngf * 2^k / ndf * 2^k.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxgan.models.layers import (Project, Upsample2x, batch_norm, dcgan_kernel_init,
                                  dcgan_scale_init, flax_conv_fn)
from jaxgan.models.minibatch import MinibatchDiscrimination, MinibatchStdDev, check_kind


def num_stages(image_size: int) -> int:
  """Number of stride-2 stages between 4x4 and `image_size`."""
  if image_size < 8 or image_size & (image_size - 1):
    raise ValueError(f"DCGAN image_size must be a power of two >= 8, got {image_size}")
  return int(math.log2(image_size)) - 2


class DCGANGenerator(nn.Module):
  """z [B, nz] -> images [B, image_size, image_size, channels] in [-1, 1].

  `axis_name`: when set (the train step sets it under pmap), BatchNorm statistics
  are computed over the whole global batch across that axis. `upsample` and
  `conv_impl` choose how the transposed convolutions run (`layers.Upsample2x`);
  none changes the parameters or the outputs.
  """
  image_size: int = 64
  channels: int = 3
  ngf: int = 64
  upsample: str = "auto"
  axis_name: str | None = None
  dtype: jnp.dtype | None = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z, train: bool = True):
    n = num_stages(self.image_size)
    x = Project(self.ngf * 2 ** (n - 1), dtype=self.dtype)(z)
    x = nn.relu(batch_norm(train, self.axis_name, self.dtype, scale_init=dcgan_scale_init)(x))
    for k in reversed(range(n - 1)):
      x = Upsample2x(self.ngf * 2 ** k, impl=self.upsample, dtype=self.dtype,
                     conv_impl=self.conv_impl)(x)
      x = nn.relu(batch_norm(train, self.axis_name, self.dtype, scale_init=dcgan_scale_init)(x))
    x = Upsample2x(self.channels, impl=self.upsample, dtype=self.dtype,
                   conv_impl=self.conv_impl)(x)
    return jnp.tanh(x).astype(jnp.float32)


class DCGANDiscriminator(nn.Module):
  """images [B, image_size, image_size, channels] -> logits [B].

  `spectral_norm=True` is the SN-DCGAN discriminator (Miyato et al. 2018): every
  convolution divided by its spectral norm (`flax.linen.SpectralNorm`, one power
  iteration per training pass, its vectors kept in `batch_stats`), and no BatchNorm.

  `minibatch`: "stddev" appends ProGAN's minibatch-stddev channel to the last
  4x4 feature map; "discrimination" adds Salimans et al.'s minibatch
  discrimination term to the logit (see `jaxgan.models.minibatch`). The last
  feature map (flattened) is sown as `intermediates/features` (feature matching).
  `conv_impl`: `layers.conv`'s implementation ("auto": a faster kernel gradient on CPU).
  """
  image_size: int = 64
  channels: int = 3
  ndf: int = 64
  axis_name: str | None = None
  dtype: jnp.dtype | None = None
  spectral_norm: bool = False
  minibatch: str = "none"
  conv_impl: str = "auto"

  def _conv(self, features, **kwargs):
    conv = nn.Conv(features, (4, 4), use_bias=False, kernel_init=dcgan_kernel_init,
                   dtype=self.dtype, conv_general_dilated=flax_conv_fn(self.conv_impl), **kwargs)
    return nn.SpectralNorm(conv) if self.spectral_norm else conv

  def _call(self, layer, x, train):
    return layer(x, update_stats=train) if self.spectral_norm else layer(x)

  @nn.compact
  def __call__(self, x, train: bool = True):
    n = num_stages(self.image_size)
    for k in range(n):
      x = self._call(self._conv(self.ndf * 2 ** k, strides=(2, 2), padding=((1, 1), (1, 1))),
                     x, train)
      if k > 0 and not self.spectral_norm:  # no BatchNorm on the first layer
        x = batch_norm(train, self.axis_name, self.dtype, scale_init=dcgan_scale_init)(x)
      x = nn.leaky_relu(x, 0.2)
    self.sow("intermediates", "features", x.reshape(x.shape[0], -1))
    features = x
    if check_kind(self.minibatch) == "stddev":
      x = MinibatchStdDev()(x)
    logit = self._call(self._conv(1, padding="VALID"), x, train).reshape(x.shape[0])
    if self.minibatch == "discrimination":
      o = MinibatchDiscrimination(axis_name=self.axis_name)(features)
      logit = logit + nn.Dense(1, use_bias=False, name="minibatch_out")(o)[:, 0]
    return logit.astype(jnp.float32)
