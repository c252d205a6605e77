"""SN-ResNet generator and discriminator (Miyato et al. 2018; Miyato & Koyama 2018).

The architectures of the SNGAN papers' released code (`sngan_projection`):

- 32x32 (CIFAR-10): G = Linear(z -> 4x4xch) + 3 up-blocks of width ch (ch = 256);
  D = an optimized down-block + a down-block + 2 blocks, all of width ch (ch = 128).
- 64x64: G = Linear(z -> 4x4x16ch) + 4 up-blocks 16ch -> 8ch -> 4ch -> 2ch -> ch;
  D = an optimized block (ch) + down-blocks 2ch, 4ch, 8ch + a block 16ch (ch = 64).

Every D layer is spectrally normalised (`flax.linen.SpectralNorm`, one power
iteration per training pass, its vectors in the `batch_stats` collection); G
uses BatchNorm. With `num_classes > 0` both are class-conditional: G's
BatchNorms take a per-class scale and shift (conditional BatchNorm) and D adds
the projection term <embed(y), h> to its logit (Miyato & Koyama 2018). Then
both are called as `module(x, labels=y, train=...)` with integer labels [B].

Initialisation follows the released code: Glorot-uniform, scaled by sqrt(2)
on the residual-branch convolutions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.models.layers import batch_norm
from jaxgan.models.minibatch import MinibatchDiscrimination, MinibatchStdDev, check_kind

# Widths per stage as multiples of `ch`, and which D blocks downsample.
_G_WIDTHS = {32: (1, 1, 1, 1), 64: (16, 8, 4, 2, 1)}  # [input of the first block, ...outputs]
_D_WIDTHS = {32: (1, 1, 1, 1), 64: (1, 2, 4, 8, 16)}  # [optimized block, ...blocks]
_D_DOWN = {32: (True, True, False, False), 64: (True, True, True, True, False)}
RESOLUTIONS = tuple(sorted(_G_WIDTHS))

_glorot = nn.initializers.xavier_uniform()
_glorot_sqrt2 = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")


def check_resolution(image_size: int) -> None:
  if image_size not in _G_WIDTHS:
    raise ValueError(f"SN-ResNet image_size must be one of {RESOLUTIONS}, got {image_size}")


def _check_labels(num_classes: int, labels, name: str) -> None:
  if num_classes and labels is None:
    raise ValueError(f"this {name} is class-conditional (num_classes={num_classes}): "
                     "call it with labels=<int array [B]>")
  if not num_classes and labels is not None:
    raise ValueError(f"this {name} is unconditional (num_classes=0) but labels were given; "
                     "set num_classes to the number of classes")


def upsample_nearest(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], each pixel repeated 2x2."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def avg_pool_2x(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ConditionalBatchNorm(nn.Module):
  """BatchNorm whose scale and shift are looked up per class (scale starts at 1, shift at 0);
  with `num_classes=0` a plain BatchNorm with learned scale and shift."""
  num_classes: int = 0
  axis_name: str | None = None
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, labels=None, train: bool = True):
    if not self.num_classes:
      return batch_norm(train, self.axis_name, self.dtype)(x)
    x = batch_norm(train, self.axis_name, self.dtype, use_scale=False, use_bias=False)(x)
    c = x.shape[-1]
    scale = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.ones, name="scale")(labels)
    shift = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.zeros, name="shift")(labels)
    return x * scale[:, None, None, :].astype(x.dtype) + shift[:, None, None, :].astype(x.dtype)


class GeneratorBlock(nn.Module):
  """BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, plus an upsampled 1x1-conv shortcut."""
  features: int
  num_classes: int = 0
  axis_name: str | None = None
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, labels=None, train: bool = True):
    norm = lambda: ConditionalBatchNorm(self.num_classes, self.axis_name, self.dtype)  # noqa: E731
    conv = lambda k, init: nn.Conv(self.features, (k, k), kernel_init=init,  # noqa: E731
                                   dtype=self.dtype)
    h = upsample_nearest(nn.relu(norm()(x, labels, train)))
    h = conv(3, _glorot_sqrt2)(h)
    h = conv(3, _glorot_sqrt2)(nn.relu(norm()(h, labels, train)))
    return h + conv(1, _glorot)(upsample_nearest(x))


class SNResNetGenerator(nn.Module):
  """z [B, nz] (and labels [B] when conditional) -> images [B, S, S, channels] in [-1, 1].

  `axis_name`: when set (the train step sets it under pmap), BatchNorm statistics
  are computed over the whole global batch across that axis.
  """
  image_size: int = 32
  channels: int = 3
  ch: int = 256
  num_classes: int = 0
  axis_name: str | None = None
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z, labels=None, train: bool = True):
    check_resolution(self.image_size)
    _check_labels(self.num_classes, labels, "generator")
    widths = [self.ch * m for m in _G_WIDTHS[self.image_size]]
    x = nn.Dense(4 * 4 * widths[0], kernel_init=_glorot, dtype=self.dtype)(z)
    x = x.reshape(z.shape[0], 4, 4, widths[0])
    for width in widths[1:]:
      x = GeneratorBlock(width, self.num_classes, self.axis_name, self.dtype)(x, labels, train)
    x = nn.relu(batch_norm(train, self.axis_name, self.dtype)(x))
    x = nn.Conv(self.channels, (3, 3), kernel_init=_glorot, dtype=self.dtype)(x)
    return jnp.tanh(x).astype(jnp.float32)


def _sn(layer: nn.Module, x, train: bool, name: str | None = None):
  """`layer(x)` with spectrally normalised weights; the power iteration advances only in training."""
  return nn.SpectralNorm(layer, name=name)(x, update_stats=train)


class DiscriminatorBlock(nn.Module):
  """ReLU-conv3x3-ReLU-conv3x3(-avgpool), plus a 1x1-conv(-avgpool) shortcut when the
  width or size changes. `optimized`: the first block, which takes images (no leading
  ReLU; the shortcut pools before its convolution)."""
  features: int
  downsample: bool = True
  optimized: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    hidden = self.features if self.optimized else x.shape[-1]
    conv = lambda f, k, init, v: _sn(nn.Conv(f, (k, k), kernel_init=init,  # noqa: E731
                                             dtype=self.dtype), v, train)
    h = x if self.optimized else nn.relu(x)
    h = conv(hidden, 3, _glorot_sqrt2, h)
    h = conv(self.features, 3, _glorot_sqrt2, nn.relu(h))
    if self.downsample:
      h = avg_pool_2x(h)
    if self.optimized:
      return h + conv(self.features, 1, _glorot, avg_pool_2x(x))
    if self.downsample or x.shape[-1] != self.features:
      x = conv(self.features, 1, _glorot, x)
      x = avg_pool_2x(x) if self.downsample else x
    return h + x


class SNResNetDiscriminator(nn.Module):
  """images [B, S, S, C] (and labels [B] when conditional) -> logits [B].

  The logit is Linear(sum-pooled ReLU features), plus <embed(y), features> with
  the projection discriminator's class embedding when `num_classes > 0`.
  `minibatch="stddev"` appends ProGAN's minibatch-stddev channel before the last
  block; `"discrimination"` adds Salimans et al.'s minibatch-discrimination term
  (on the pooled features) to the logit.
  """
  image_size: int = 32
  ch: int = 128
  num_classes: int = 0
  dtype: jnp.dtype | None = None
  minibatch: str = "none"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, labels=None, train: bool = True):
    check_resolution(self.image_size)
    _check_labels(self.num_classes, labels, "discriminator")
    widths = [self.ch * m for m in _D_WIDTHS[self.image_size]]
    downs = _D_DOWN[self.image_size]
    x = DiscriminatorBlock(widths[0], downs[0], optimized=True, dtype=self.dtype)(x, train)
    for i, (width, down) in enumerate(zip(widths[1:], downs[1:])):
      if i == len(widths) - 2 and check_kind(self.minibatch) == "stddev":
        x = MinibatchStdDev()(x)
      x = DiscriminatorBlock(width, down, dtype=self.dtype)(x, train)
    h = jnp.sum(nn.relu(x), axis=(1, 2))
    self.sow("intermediates", "features", h)  # read with mutable=["intermediates"]
    logit = _sn(nn.Dense(1, kernel_init=_glorot, dtype=self.dtype, name="linear"), h, train,
                name="linear_sn")[:, 0]
    if self.num_classes:  # the projection term, <embed(y), h>
      embed = _sn(nn.Embed(self.num_classes, h.shape[-1], embedding_init=_glorot, name="embed"),
                  labels, train, name="embed_sn")
      logit = logit + jnp.sum(embed * h, axis=-1)
    if self.minibatch == "discrimination":
      o = MinibatchDiscrimination(axis_name=self.axis_name)(h)
      logit = logit + _sn(nn.Dense(1, use_bias=False, kernel_init=_glorot, name="minibatch_out"),
                          o, train, name="minibatch_out_sn")[:, 0]
    return logit.astype(jnp.float32)
