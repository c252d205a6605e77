"""Layers shared by the models, each kept small so its implementation can be swapped.

`Upsample2x` is the DCGAN generator's strided transposed convolution (PyTorch's
``ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)``). Its parameter
is the 4x4 kernel laid out ``[kh, kw, cin, cout]`` (PyTorch's weight
``[cin, cout, kh, kw]`` transposed), whatever the implementation, so checkpoints
and PyTorch DCGAN weights stay interchangeable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

# DCGAN's weight init: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales.
dcgan_kernel_init = nn.initializers.normal(0.02)


def dcgan_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, axis_name: str | None, dtype=None, **kwargs) -> nn.BatchNorm:
  """BatchNorm as PyTorch's BatchNorm2d: momentum 0.1 (flax: 0.9), eps 1e-5, two-pass variance.

  The two-pass variance mean((x - mean)^2) replaces flax's default E[x^2] - E[x]^2,
  whose cancellation made float32 results depend on how the batch is split over
  devices (up to 1e-3 relative on 8 devices x 2 rows, vs 2e-7 two-pass).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_fast_variance=False, axis_name=axis_name, dtype=dtype, **kwargs)


UPSAMPLE_IMPLS = ("subpixel", "transpose")

# For output row 2m+a, ConvTranspose(4, 2, 1) reads input rows m-1, m, m+1 with
# kernel taps _TAPS[a] (4 marks "no tap": a zero row appended to the kernel).
_TAPS = np.array([[3, 1, 4], [4, 2, 0]])


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
  """Rewrites a [4, 4, cin, cout] transposed-conv kernel as a [3, 3, cin, 4*cout] conv kernel.

  Output channel (a, b, c) of the 3x3 convolution is output pixel (2m+a, 2n+b),
  channel c, of the transposed convolution; depth-to-space puts it in place.
  """
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  rows = padded[_TAPS]  # [2 (a), 3, 5, cin, cout]
  phases = rows[:, :, _TAPS]  # [2 (a), 3 (r), 2 (b), 3 (c), cin, cout]
  k3 = jnp.transpose(phases, (1, 3, 4, 0, 2, 5))  # [r, c, cin, a, b, cout]
  cin, cout = kernel.shape[2:]
  return k3.reshape(3, 3, cin, 4 * cout)


def depth_to_space(x: jax.Array, cout: int) -> jax.Array:
  b, h, w, _ = x.shape
  x = x.reshape(b, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, cout)


def conv_transpose_4x4_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Reference: PyTorch's ConvTranspose2d(4, 2, 1) as an input-dilated convolution."""
  return jax.lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1), padding=((2, 2), (2, 2)),
      lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Upsample2x(nn.Module):
  """Doubles H and W: PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1, no bias).

  `impl="subpixel"` runs one 3x3 convolution to 4*features channels followed by
  depth-to-space (same outputs, much faster gradients on CPU); `"transpose"` is
  the textbook input-dilated convolution. Both read the same parameter.
  """
  features: int
  impl: str = "subpixel"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", dcgan_kernel_init, (4, 4, x.shape[-1], self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    if self.impl == "subpixel":
      y = jax.lax.conv_general_dilated(
          x, subpixel_kernel(kernel), window_strides=(1, 1), padding=((1, 1), (1, 1)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return depth_to_space(y, self.features)
    if self.impl == "transpose":
      return conv_transpose_4x4_s2(x, kernel)
    raise ValueError(f"unknown upsample impl {self.impl!r}; choose one of {UPSAMPLE_IMPLS}")


class Project(nn.Module):
  """Noise vector -> 4x4 feature map: PyTorch's ConvTranspose2d(nz, features, 4, 1, 0) on a 1x1 input."""
  features: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z):
    kernel = self.param("kernel", dcgan_kernel_init, (4, 4, z.shape[-1], self.features))
    z, kernel = nn.dtypes.promote_dtype(z, kernel, dtype=self.dtype)
    return jnp.einsum("bi,hwio->bhwo", z, kernel)
