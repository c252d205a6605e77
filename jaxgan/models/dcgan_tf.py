"""DCGAN with the structure of DCGAN-tensorflow (carpedm20), the code PacGAN's Stacked MNIST
experiments are built on.

It differs from `jaxgan.models.dcgan` (pytorch/examples' structure) in ways that matter for
reproducing those runs: 5x5 kernels with biases, TensorFlow's "SAME" padding so any image
size works (28 -> 14 -> 7 -> 4 -> 2 for MNIST), G starting from a linear layer onto a
ceil(size / 16)-sized map, and D ending in a linear layer on its last feature map. Widths
are gf * 8, 4, 2, 1 in G and df * 1, 2, 4, 8 in D; BatchNorm (momentum 0.9, eps 1e-5, scale
initialised at 1) after every layer but G's output and D's first and last; weights from
N(0, 0.02) (D's convolutions: truncated at 2 std), biases 0.

`conv_impl="auto"` computes every convolution as image patches and one matrix product on
CPU ("patches"), where XLA's own 5x5 stride-2 convolutions on the small maps are 10-100x
slower (benchmarks/conv_patches.py), and with the backend's own ("xla") elsewhere; both give
the same outputs and gradients from the same parameters.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.models import layers
from jaxgan.models.layers import batch_norm

_KERNEL = 5
_normal = nn.initializers.normal(0.02)


def sizes(image_size: int) -> list[int]:
  """The feature map sizes from the image down: TensorFlow's SAME stride-2 sizes, ceil(s / 2)."""
  if image_size < 16:
    raise ValueError(f"the DCGAN-tensorflow networks need image_size >= 16, got {image_size}")
  out = [image_size]
  for _ in range(4):
    out.append(math.ceil(out[-1] / 2))
  return out


def resolve_conv_impl(impl: str) -> str:
  """"auto" -> "patches" on CPU, else "xla"; "patches" and "xla" as they are."""
  if impl not in ("auto", "xla", "patches"):
    raise ValueError(f"unknown conv_impl {impl!r} for the DCGAN-tensorflow networks; choose "
                     "'auto', 'xla' or 'patches'")
  return ("patches" if layers.on_cpu() else "xla") if impl == "auto" else impl


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` (stride 2, explicit padding, with bias: the same parameters
  and outputs) computed by `layers.conv_transpose` in the form `impl` names."""
  features: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _normal, (_KERNEL, _KERNEL, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return layers.conv_transpose(x, kernel, (2, 2), self.padding, self.impl) + bias


def _same_transpose_padding(in_size: int, out_size: int) -> tuple[int, int]:
  """The padding of the dilated input that makes a stride-2 transposed convolution the
  transpose of TensorFlow's SAME convolution from `out_size` to `in_size`."""
  total = max((in_size - 1) * 2 + _KERNEL - out_size, 0)  # the SAME convolution's padding
  before = total // 2
  return _KERNEL - 1 - before, _KERNEL - 1 - (total - before)


class DCGANTFGenerator(nn.Module):
  """z [B, nz] -> images [B, image_size, image_size, channels] in [-1, 1] (tanh).

  `axis_name`: BatchNorm statistics over the global batch across that axis (set by the
  train step under pmap)."""
  image_size: int = 28
  channels: int = 3
  ngf: int = 64
  axis_name: str | None = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z, train: bool = True):
    s, impl = sizes(self.image_size), resolve_conv_impl(self.conv_impl)
    x = nn.Dense(self.ngf * 8 * s[4] ** 2, kernel_init=_normal)(z)
    x = x.reshape(z.shape[0], s[4], s[4], self.ngf * 8)
    x = nn.relu(batch_norm(train, self.axis_name)(x))
    for n, (k, width) in enumerate(zip((3, 2, 1, 0), (self.ngf * 4, self.ngf * 2, self.ngf,
                                                      self.channels))):
      pad = _same_transpose_padding(s[k + 1], s[k])
      # named as flax's ConvTranspose layers were, so saved runs restore
      x = ConvTranspose(width, (pad, pad), impl, name=f"ConvTranspose_{n}")(x)
      if k > 0:
        x = nn.relu(batch_norm(train, self.axis_name)(x))
    return jnp.tanh(x).astype(jnp.float32)


class DCGANTFDiscriminator(nn.Module):
  """images [B, image_size, image_size, channels] -> logits [B].

  Its last feature map (flattened) is sown as `intermediates/features` (feature matching)."""
  image_size: int = 28
  channels: int = 3
  ndf: int = 64
  axis_name: str | None = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = True):
    sizes(self.image_size)  # checks the size
    conv_fn = layers.flax_conv_fn(resolve_conv_impl(self.conv_impl))
    for k in range(4):
      x = nn.Conv(self.ndf * 2 ** k, (_KERNEL, _KERNEL), strides=(2, 2), padding="SAME",
                  kernel_init=jax.nn.initializers.truncated_normal(0.02),
                  conv_general_dilated=conv_fn)(x)
      if k > 0:
        x = batch_norm(train, self.axis_name)(x)
      x = nn.leaky_relu(x, 0.2)
    features = x.reshape(x.shape[0], -1)
    self.sow("intermediates", "features", features)
    return nn.Dense(1, kernel_init=_normal)(features).reshape(x.shape[0]).astype(jnp.float32)
