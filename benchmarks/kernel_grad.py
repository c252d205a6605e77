"""Milliseconds per kernel gradient of each DCGAN-64 convolution, in four forms.

    python benchmarks/kernel_grad.py [--batch=64] [--repeats=10]

The kernel gradient is most of the convolution backward work in a GAN step, and
XLA:CPU's own is slow. Forms, all computing the same [kh, kw, cin, cout] gradient:
- `tap_matmul`: the library's (`jaxgan.models.layers.tap_kernel_grad`): one matrix
  product per kernel tap, with strided input slices for stride 2;
- `xla`: XLA's convolution kernel gradient (`jax.vjp` of `lax.conv_general_dilated`);
- `s2d_taps`: a stride-2 4x4 convolution rewritten as a stride-1 2x2 one on the
  space-to-depth input, then one product per tap (4 unstrided taps of 4x the channels);
- `im2col`: as `s2d_taps`, with the taps concatenated into one product.
`s2d_taps` and `im2col` were tried for issue 8 and not kept (docs/performance.md); the
script keeps their measurement reproducible. Each form's largest difference from
`tap_matmul`, relative to the gradient's largest entry, is printed beside its time.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxgan.models import layers  # noqa: E402

PAD1 = ((1, 1), (1, 1))


def dcgan64_convolutions(batch: int):
  """(name, input shape, kernel shape, strides, padding) of the kernel gradients a DCGAN-64
  step computes on CPU: those of D's stride-2 4x4 layers. G's are the same products:
  `layers.upsample_by_phases` takes each transposed convolution's kernel gradient as that of
  its adjoint stride-2 convolution (input: G's output gradient), so G's layer
  4x4x512 -> 256 is the shape of D's 8x8x256 -> 512, and so on down."""
  return [
      ("D 64x64x3 -> 64 (G 32x32x64 -> 3)", (batch, 64, 64, 3), (4, 4, 3, 64), (2, 2), PAD1),
      ("D 32x32x64 -> 128 (G 16x16x128 -> 64)", (batch, 32, 32, 64), (4, 4, 64, 128), (2, 2),
       PAD1),
      ("D 16x16x128 -> 256 (G 8x8x256 -> 128)", (batch, 16, 16, 128), (4, 4, 128, 256), (2, 2),
       PAD1),
      ("D 8x8x256 -> 512 (G 4x4x512 -> 256)", (batch, 8, 8, 256), (4, 4, 256, 512), (2, 2),
       PAD1),
  ]


def _stride1_taps(xp, dy, kh, kw, concatenate: bool):
  _, ho, wo, cout = dy.shape
  slices = [xp[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)]
  if concatenate:
    return jnp.einsum("bhwo,bhwc->co", dy, jnp.concatenate(slices, axis=-1)).reshape(
        kh, kw, -1, cout)
  taps = [jnp.einsum("bhwo,bhwc->oc", dy, s) for s in slices]
  return jnp.stack(taps).reshape(kh, kw, cout, -1).transpose(0, 1, 3, 2)


def space_to_depth_kernel_grad(x, dy, kernel_shape, strides, padding, concatenate=False):
  """The kernel gradient of a stride-2 4x4 convolution (even padded size) via space-to-depth:
  x_pad[b, 2(h+i)+p, 2(w+j)+q, c] = x_s2d[b, h+i, w+j, (p, q, c)]."""
  kh, kw, cin, cout = kernel_shape
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  b, hp, wp, _ = xp.shape
  xs = xp.reshape(b, hp // 2, 2, wp // 2, 2, cin).transpose(0, 1, 3, 2, 4, 5)
  dk = _stride1_taps(xs.reshape(b, hp // 2, wp // 2, 4 * cin), dy, 2, 2, concatenate)
  return dk.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5).reshape(kernel_shape)


def xla_kernel_grad(x, dy, kernel_shape, strides, padding):
  kernel = jnp.zeros(kernel_shape, x.dtype)
  _, vjp = jax.vjp(lambda k: jax.lax.conv_general_dilated(
      x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")), kernel)
  return vjp(dy)[0]


FORMS = {
    "tap_matmul": layers.tap_kernel_grad,
    "xla": xla_kernel_grad,
    "s2d_taps": space_to_depth_kernel_grad,
    "im2col": lambda *a: space_to_depth_kernel_grad(*a, concatenate=True),
}


def milliseconds(fn, args, repeats: int):
  """(milliseconds per call of jitted `fn` after a warm-up call, its output: any pytree)."""
  fn = jax.jit(fn)
  out = jax.block_until_ready(fn(*args))  # compile and warm up
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats * 1e3, out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(f"kernel gradient ms per call, batch {args.batch}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}")
  print("layer | " + " | ".join(FORMS))
  print(" | ".join(["---"] * (len(FORMS) + 1)))
  key_x, key_dy = jax.random.split(jax.random.key(0))
  totals = dict.fromkeys(FORMS, 0.0)
  for name, x_shape, kernel_shape, strides, padding in dcgan64_convolutions(args.batch):
    x = jax.random.normal(key_x, x_shape)
    out_hw = [(x_shape[1 + d] + sum(padding[d]) - kernel_shape[d]) // strides[d] + 1
              for d in range(2)]
    dy = jax.random.normal(key_dy, (args.batch, *out_hw, kernel_shape[3]))
    cells, reference = [], None
    for form, fn in FORMS.items():
      ms, dk = milliseconds(
          lambda x, dy, fn=fn: fn(x, dy, kernel_shape, strides, padding), (x, dy), args.repeats)
      reference = dk if reference is None else reference
      err = float(jnp.max(jnp.abs(dk - reference)) / jnp.max(jnp.abs(reference)))
      totals[form] += ms
      cells.append(f"{ms:.1f}" + ("" if form == "tap_matmul" else f" ({err:.0e})"))
    print(f"{name} | " + " | ".join(cells), flush=True)
  print("total | " + " | ".join(f"{t:.1f}" for t in totals.values()))


if __name__ == "__main__":
  main()
