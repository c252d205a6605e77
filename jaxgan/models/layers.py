"""Layers shared by the models, each kept small so its implementation can be swapped.

`Upsample2x` is the DCGAN generator's strided transposed convolution (PyTorch's
``ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)``). Its parameter
is the 4x4 kernel laid out ``[kh, kw, cin, cout]`` (PyTorch's weight
``[cin, cout, kh, kw]`` transposed), whatever the implementation, so checkpoints
and PyTorch DCGAN weights stay interchangeable.

`conv` is `lax.conv_general_dilated` with the same outputs and gradients, whose
kernel gradient is a sum of per-tap matrix products: XLA:CPU computes the
kernel gradient of a convolution 2-4x slower than it computes the forward pass.
Its "patches" form (and `conv_transpose`'s) is one matrix product over image patches:
XLA:CPU runs 5x5 stride-2 convolutions on small maps up to 100x slower than that
(benchmarks/conv_patches.py).
"""

from __future__ import annotations

import functools
from typing import Sequence

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


UPSAMPLE_IMPLS = ("auto", "phase", "subpixel", "transpose")
CONV_IMPLS = ("auto", "xla", "tap_matmul", "patches")
_NHWC = ("NHWC", "HWIO", "NHWC")


def on_cpu() -> bool:
  """Whether computations are placed on the CPU backend by default (chooses fast paths)."""
  return jax.default_backend() == "cpu"


# "auto" uses the tap-matmul kernel gradient for convolutions of at least this many
# multiply-adds: below it the time saved is negligible and the extra compile time is not.
TAP_MATMUL_MIN_MACS = 10**8


def resolve_conv_impl(impl: str, macs: int | None = None) -> str:
  """"auto" -> "tap_matmul" on CPU (for convolutions of >= TAP_MATMUL_MIN_MACS multiply-adds
  when `macs` is given), else "xla", the backend's own convolution. "patches" is chosen by
  name only (`jaxgan.models.dcgan_tf` does so on CPU)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv impl {impl!r}; choose one of {CONV_IMPLS}")
  if impl == "auto":
    big = macs is None or macs >= TAP_MATMUL_MIN_MACS
    return "tap_matmul" if on_cpu() and big else "xla"
  return impl


def resolve_upsample_impl(impl: str, dtype, backend: str | None = None) -> str:
  """"auto" -> the fastest measured form of `Upsample2x` (docs/performance.md): "phase" on
  CPU and, for float32 compute, on GPU (1.3-1.4x the step of cuDNN's transposed convolution
  on an H200); "transpose" (the backend's own) for 16-bit compute on GPU (~1.1x phase's
  speed there) and on other backends."""
  if impl not in UPSAMPLE_IMPLS:
    raise ValueError(f"unknown upsample impl {impl!r}; choose one of {UPSAMPLE_IMPLS}")
  if impl != "auto":
    return impl
  backend = backend or jax.default_backend()
  if backend == "cpu" or (backend == "gpu" and jnp.dtype(dtype).itemsize >= 4):
    return "phase"
  return "transpose"


def _lax_conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _window(xp: jax.Array, start: Sequence[int], size: Sequence[int], strides: Sequence[int]
            ) -> jax.Array:
  """xp[:, a + s*h, b + t*w] for h < size[0], w < size[1]: the pixels one kernel tap meets
  across a strided convolution's output (start = the tap's offset in the padded input)."""
  (a, b), (n, m), (s, t) = start, size, strides
  return xp[:, a:a + s * (n - 1) + 1:s, b:b + t * (m - 1) + 1:t]


def tap_kernel_grad(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int],
                    strides: Sequence[int], padding) -> jax.Array:
  """d loss / d kernel of an NHWC convolution as one matrix product per kernel tap:
  dk[i, j] = sum over (b, h, w) of dy[b, h, w, :] (x) x_pad[b, s*h + i, s*w + j, :]."""
  kh, kw, _, _ = kernel_shape
  _, ho, wo, _ = dy.shape
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  taps = [jnp.einsum("bhwo,bhwc->oc", dy, _window(xp, (i, j), (ho, wo), strides),
                     preferred_element_type=jnp.float32)
          for i in range(kh) for j in range(kw)]  # [O, C] each: the contiguous operand order
  return jnp.stack(taps).transpose(0, 2, 1).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _tap_matmul_conv(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding)


def _tap_matmul_conv_fwd(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding), (x, kernel)


def _tap_matmul_conv_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  dk = tap_kernel_grad(x, dy, kernel.shape, strides, padding).astype(kernel.dtype)
  if (kernel.shape[:2] == (4, 4) and strides == (2, 2) and padding == ((1, 1), (1, 1))
      and x.shape[1] == 2 * dy.shape[1] and x.shape[2] == 2 * dy.shape[2]):
    # The input gradient of Conv(4, stride 2, padding 1) is ConvTranspose(4, 2, 1) with the
    # same weights; the phase form avoids XLA:CPU's slow input-dilated convolution.
    dx = conv_transpose_by_phases(dy, jnp.swapaxes(kernel, 2, 3), "xla")
    return dx.astype(x.dtype), dk
  _, input_vjp = jax.vjp(lambda v: _lax_conv(v, kernel, strides, padding), x)
  return input_vjp(dy)[0], dk


_tap_matmul_conv.defvjp(_tap_matmul_conv_fwd, _tap_matmul_conv_bwd)


def _conv_patches(x, kernel, strides, padding):
  """The convolution as one matrix product: [B, Ho, Wo, kh*kw*cin] patches (tap-major, the
  order of the HWIO kernel's rows) times the [kh*kw*cin, cout] kernel. Its gradients are
  autodiff's: the kernel's one product more, the input's a sum of strided pads."""
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*padding[0], 0), (*padding[1], 0),
                                               (0, 0, 0)))
  ho, wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
  patches = jnp.concatenate([_window(xp, (i, j), (ho, wo), strides)
                             for i in range(kh) for j in range(kw)], axis=-1)
  return jnp.einsum("bhwk,ko->bhwo", patches, kernel.reshape(kh * kw * cin, cout))


def conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="VALID",
         impl: str = "auto") -> jax.Array:
  """NHWC x HWIO convolution. `impl="tap_matmul"` computes the same outputs and
  gradients as `"xla"` (to float rounding) with a faster kernel gradient on CPU;
  `"patches"` as one matrix product over image patches; `"auto"` chooses by backend and
  size (`resolve_conv_impl`)."""
  strides = tuple(int(s) for s in strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  padding = tuple(tuple(int(v) for v in p) for p in padding)
  out_rows = x.shape[0] * np.prod([(x.shape[1 + d] + sum(padding[d]) - kernel.shape[d])
                                   // strides[d] + 1 for d in range(2)])
  impl = resolve_conv_impl(impl, int(out_rows * np.prod(kernel.shape)))
  if impl == "tap_matmul":
    return _tap_matmul_conv(x, kernel, strides, padding)
  if impl == "patches":
    return _conv_patches(x, kernel, strides, padding)
  return _lax_conv(x, kernel, strides, padding)


def _transpose_geometry(x_shape, kernel_shape, strides, padding):
  """For each spatial axis: (input size, output size, stride, low padding, kernel size)."""
  return [(x_shape[1 + d], strides[d] * (x_shape[1 + d] - 1) + 1 + sum(padding[d])
           - kernel_shape[d] + 1, strides[d], padding[d][0], kernel_shape[d]) for d in range(2)]


def _spread(cols, geometry):
  """Transposed convolution from its [B, H, W, kh*kw, cout] products: input pixel m's product
  with tap i lands on output s*m + lo - i (lax.pad places it: interior s - 1, negative
  padding crops); the taps' contributions are summed."""
  (h, out_h, sh, lo_h, kh), (w, out_w, sw, lo_w, kw) = geometry
  y = 0
  for t in range(kh * kw):
    i, j = divmod(t, kw)
    y = y + jax.lax.pad(cols[:, :, :, t], jnp.zeros((), cols.dtype),
                        ((0, 0, 0), (lo_h - i, out_h - sh * (h - 1) - 1 - lo_h + i, sh - 1),
                         (lo_w - j, out_w - sw * (w - 1) - 1 - lo_w + j, sw - 1), (0, 0, 0)))
  return y


def _gather(dy, geometry):
  """The adjoint of `_spread`: [B, H, W, kh*kw*cout], dy at the output position each (input
  pixel, tap) lands on (zero where that is outside the output); strided slices, tap-major."""
  pads, starts = [], []
  for size, out, s, lo, k in geometry:
    pads.append((max(k - 1 - lo, 0), max(s * (size - 1) + lo - (out - 1), 0)))
    starts.append(lo + pads[-1][0])
  (h, _, sh, _, kh), (w, _, sw, _, kw) = geometry
  dyp = jnp.pad(dy, ((0, 0), pads[0], pads[1], (0, 0)))
  return jnp.concatenate([_window(dyp, (starts[0] - i, starts[1] - j), (h, w), (sh, sw))
                          for i in range(kh) for j in range(kw)], axis=-1)


def _kernel_matrix(kernel):
  """HWIO [kh, kw, cin, cout] -> [cin, kh*kw*cout] (tap-major columns)."""
  kh, kw, cin, cout = kernel.shape
  return jnp.moveaxis(kernel, 2, 0).reshape(cin, kh * kw * cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose_patches(x, kernel, strides, padding):
  geometry = _transpose_geometry(x.shape, kernel.shape, strides, padding)
  cols = jnp.einsum("bhwc,ck->bhwk", x, _kernel_matrix(kernel))
  return _spread(cols.reshape(*x.shape[:3], -1, kernel.shape[-1]), geometry)


def _conv_transpose_patches_fwd(x, kernel, strides, padding):
  return _conv_transpose_patches(x, kernel, strides, padding), (x, kernel)


def _conv_transpose_patches_bwd(strides, padding, residuals, dy):
  """Both gradients from the gathered output gradient, one matrix product each."""
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  dcols = _gather(dy, _transpose_geometry(x.shape, kernel.shape, strides, padding))
  dx = jnp.einsum("bhwk,ck->bhwc", dcols, _kernel_matrix(kernel))
  dk = jnp.einsum("bhwc,bhwk->ck", x, dcols).reshape(cin, kh, kw, cout)
  return dx.astype(x.dtype), jnp.moveaxis(dk, 0, 2).astype(kernel.dtype)


_conv_transpose_patches.defvjp(_conv_transpose_patches_fwd, _conv_transpose_patches_bwd)


def conv_transpose(x: jax.Array, kernel: jax.Array, strides, padding, impl: str = "xla"
                   ) -> jax.Array:
  """`flax.linen.ConvTranspose`'s computation (explicit padding, transpose_kernel=False): the
  input-dilated convolution with the HWIO kernel as it is. `impl="patches"` computes the same
  as one matrix product whose [H, W, kh*kw, cout] products are spread onto the output, and
  its gradients as one product each; "xla" is `lax.conv_transpose`."""
  if impl not in ("xla", "patches"):
    raise ValueError(f"unknown conv_transpose impl {impl!r}; choose 'xla' or 'patches'")
  strides = tuple(int(s) for s in strides)
  padding = tuple(tuple(int(v) for v in p) for p in padding)
  if impl == "patches":
    return _conv_transpose_patches(x, kernel, strides, padding)
  return jax.lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=_NHWC)


def flax_conv_fn(impl: str):
  """A `conv_general_dilated` for `flax.linen.Conv(conv_general_dilated=...)` that runs `conv`
  (plain NHWC convolutions only; anything else goes to lax unchanged)."""
  if resolve_conv_impl(impl) == "xla":
    return None  # flax's default, lax.conv_general_dilated (the layer's `conv` might pick it too)

  def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                           precision=None, **kwargs):
    plain = (lhs.ndim == 4 and feature_group_count == 1 and not kwargs and precision is None
             and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
             and (dimension_numbers is None or
                  jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
                  == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)))
    if plain:
      return conv(lhs, rhs, window_strides, padding, impl=impl)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision, **kwargs)

  return conv_general_dilated


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


# The phase form: output pixel (2m+a, 2n+b) is a 2x2 window of the padded input at
# (m+a, n+b) with kernel taps _PHASE_TAPS[a] x _PHASE_TAPS[b].
_PHASE_TAPS = np.array([[3, 1], [2, 0]])


def phase_kernel(kernel: jax.Array) -> jax.Array:
  """Rewrites a [4, 4, cin, cout] transposed-conv kernel as a [2, 2, cin, 4*cout] conv kernel
  (output channel (a, b, c): output phase (a, b), channel c)."""
  phases = kernel[_PHASE_TAPS][:, :, _PHASE_TAPS]  # [a, r, b, s, cin, cout]
  cin, cout = kernel.shape[2:]
  return jnp.transpose(phases, (1, 3, 4, 0, 2, 5)).reshape(2, 2, cin, 4 * cout)


def conv_transpose_by_phases(x: jax.Array, kernel: jax.Array, conv_impl: str = "auto"):
  """PyTorch's ConvTranspose2d(4, 2, 1) as one 2x2 convolution of the 1-padded input to
  4*cout channels, whose four phases are interleaved into the 2x upsampled output.

  It multiplies no structural zeros (the 3x3 sub-pixel form multiplies 20 of 36
  taps by zero) and computes (H+1)(W+1) windows for H*W outputs per phase.
  """
  b, h, w, _ = x.shape
  cout = kernel.shape[-1]
  y = conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), phase_kernel(kernel), impl=conv_impl)
  y = y.reshape(b, h + 1, w + 1, 2, 2, cout)
  rows = [jnp.stack([y[:, a:a + h, c:c + w, a, c] for c in range(2)], axis=3) for a in range(2)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, cout)


@jax.custom_vjp
def _upsample_by_phases_tap(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return conv_transpose_by_phases(x, kernel, "xla")


def _upsample_by_phases_tap_fwd(x, kernel):
  return conv_transpose_by_phases(x, kernel, "xla"), (x, kernel)


def _upsample_by_phases_tap_bwd(residuals, dy):
  """ConvTranspose(4, 2, 1) with kernel K is the adjoint of Conv(4, stride 2, padding 1) with
  K's in/out axes swapped (Ks): <convT(x, K), dy> = <x, conv(dy, Ks)>. So its input gradient
  is conv(dy, Ks), a stride-2 convolution (no phase form's extra windows), and its kernel
  gradient is that convolution's tap-matmul kernel gradient with x as the output gradient."""
  x, kernel = residuals
  swapped = jnp.swapaxes(kernel, 2, 3)
  dx = _lax_conv(dy, swapped, (2, 2), ((1, 1), (1, 1)))
  dk = tap_kernel_grad(dy, x, swapped.shape, (2, 2), ((1, 1), (1, 1)))
  return dx.astype(x.dtype), jnp.swapaxes(dk, 2, 3).astype(kernel.dtype)


_upsample_by_phases_tap.defvjp(_upsample_by_phases_tap_fwd, _upsample_by_phases_tap_bwd)


def upsample_by_phases(x: jax.Array, kernel: jax.Array, conv_impl: str = "auto") -> jax.Array:
  """`conv_transpose_by_phases` for training: with the tap-matmul implementation (`conv_impl`
  "auto" on CPU) its gradients are those of the equivalent stride-2 convolution (input
  gradient: that convolution of dy; kernel gradient: its tap-matmul kernel gradient), which
  compute no extra windows and run faster on XLA:CPU than the phase form's own."""
  b, h, w, cin = x.shape
  macs = b * 4 * h * w * 4 * cin * kernel.shape[-1]
  if resolve_conv_impl(conv_impl, macs) == "tap_matmul":
    return _upsample_by_phases_tap(x, kernel)
  return conv_transpose_by_phases(x, kernel, conv_impl)


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

  All implementations read the same parameter and give the same outputs:
  `"phase"`: one 2x2 convolution to 4*features channels, phases interleaved
  (`conv_transpose_by_phases`; fastest on CPU); `"subpixel"`: one 3x3
  convolution and depth-to-space; `"transpose"`: the textbook input-dilated
  convolution (cuDNN's own transposed convolution on GPU). `"auto"` picks by
  backend and compute dtype (`resolve_upsample_impl`). `conv_impl` is `conv`'s
  (kernel-gradient) implementation for the phase form (its gradients: `upsample_by_phases`).
  """
  features: int
  impl: str = "auto"
  dtype: jnp.dtype | None = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", dcgan_kernel_init, (4, 4, x.shape[-1], self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    impl = resolve_upsample_impl(self.impl, x.dtype)
    if impl == "phase":
      return upsample_by_phases(x, kernel, self.conv_impl)
    if impl == "subpixel":
      y = jax.lax.conv_general_dilated(
          x, subpixel_kernel(kernel), window_strides=(1, 1), padding=((1, 1), (1, 1)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return depth_to_space(y, self.features)
    return conv_transpose_4x4_s2(x, kernel)  # "transpose"


class Project(nn.Module):
  """Noise vector -> 4x4 feature map: PyTorch's ConvTranspose2d(nz, features, 4, 1, 0) on a 1x1 input."""
  features: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z):
    kernel = self.param("kernel", dcgan_kernel_init, (4, 4, z.shape[-1], self.features))
    z, kernel = nn.dtypes.promote_dtype(z, kernel, dtype=self.dtype)
    return jnp.einsum("bi,hwio->bhwo", z, kernel)
