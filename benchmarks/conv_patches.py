"""The DCGAN-tensorflow networks' convolutions on CPU: XLA's own against image patches and one
matrix product (`conv_impl="xla"` | `"patches"`), layer by layer and as the whole step.

    python benchmarks/conv_patches.py [--widths=16,64] [--batch=64] [--repeats=10] [--no_step]

For each width (ngf = ndf), every 5x5 stride-2 layer of `jaxgan.models.DCGANTFGenerator` /
`DCGANTFDiscriminator` at 28x28 (PacGAN's Stacked MNIST networks): D's SAME convolutions
(`layers.conv`) and G's transposed convolutions (`layers.conv_transpose`), each jitted and
timed alone, forward and forward + both gradients, in milliseconds; the largest difference
between the two forms' outputs and gradients, relative to the largest entry, beside them.
Then the Stacked MNIST train step of `experiments/configs/stacked_mnist.py:pacgan` (pack 1
and 2, G per pack slot, two G steps) at that width in seconds per step with each form
(`--no_step` skips it). "auto" picks "patches" on CPU (`dcgan_tf.resolve_conv_impl`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from jaxgan.models import dcgan_tf, layers  # noqa: E402
from kernel_grad import milliseconds  # noqa: E402

IMPLS = ("xla", "patches")


def network_layers(width: int, batch: int, image_size: int = 28):
  """(name, input shape, kernel shape, function of (x, kernel, impl)) of each 5x5 stride-2 layer."""
  s = dcgan_tf.sizes(image_size)
  rows = []
  for k, (cin, cout) in enumerate([(3, width), (width, 2 * width), (2 * width, 4 * width),
                                   (4 * width, 8 * width)]):
    rows.append((f"D conv {s[k]}->{s[k + 1]} {cin}->{cout}", (batch, s[k], s[k], cin),
                 (5, 5, cin, cout),
                 lambda x, w, impl: layers.conv(x, w, (2, 2), "SAME", impl=impl)))
  for k, (cin, cout) in zip((3, 2, 1, 0), [(8 * width, 4 * width), (4 * width, 2 * width),
                                           (2 * width, width), (width, 3)]):
    pad = dcgan_tf._same_transpose_padding(s[k + 1], s[k])
    rows.append((f"G transposed {s[k + 1]}->{s[k]} {cin}->{cout}", (batch, s[k + 1], s[k + 1], cin),
                 (5, 5, cin, cout),
                 lambda x, w, impl, pad=pad: layers.conv_transpose(x, w, (2, 2), (pad, pad), impl)))
  return rows


def layer_table(width: int, batch: int, repeats: int) -> None:
  print(f"\nwidth {width}, batch {batch}: ms forward | ms forward + gradients "
        "(xla / patches), largest relative difference")
  totals = {impl: [0.0, 0.0] for impl in IMPLS}
  for name, x_shape, k_shape, fn in network_layers(width, batch):
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = 0.05 * jax.random.normal(jax.random.key(1), k_shape)
    cells, results = [], {}
    for impl in IMPLS:
      forward = lambda x, w, impl=impl: fn(x, w, impl)  # noqa: E731
      grads = jax.grad(lambda x, w, f=forward: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))
      both = lambda x, w, f=forward, g=grads: (f(x, w), g(x, w))  # noqa: E731
      forward_ms, _ = milliseconds(forward, (x, w), repeats)
      both_ms, results[impl] = milliseconds(both, (x, w), repeats)
      times = forward_ms, both_ms
      totals[impl] = [t + u for t, u in zip(totals[impl], times)]
      cells.append(times)
    diff = max(float(jnp.abs(a - b).max() / jnp.abs(a).max())
               for a, b in zip(jax.tree.leaves(results["xla"]), jax.tree.leaves(results["patches"])))
    print(f"  {name:34s} {cells[0][0]:8.2f} / {cells[1][0]:7.2f} | "
          f"{cells[0][1]:8.2f} / {cells[1][1]:7.2f}   {diff:.1e}")
  print(f"  {'sum':34s} {totals['xla'][0]:8.2f} / {totals['patches'][0]:7.2f} | "
        f"{totals['xla'][1]:8.2f} / {totals['patches'][1]:7.2f}")


def step_seconds(width: int, pack: int, impl: str, repeats: int) -> float:
  """Seconds per Stacked MNIST `:pacgan` train step at `width` (random real images)."""
  from experiments.configs import stacked_mnist as configs
  from jaxgan import stacked_mnist, train

  c = configs.get_config("pacgan")
  c.ngf = c.ndf = width
  c.pack, c.conv_impl = pack, impl
  state = stacked_mnist.make_state(c, jax.random.key(0))
  images = jax.random.uniform(jax.random.key(1), (c.batch_size * c.pack, 28, 28, 3))
  step = jax.jit(train.train_step, donate_argnums=0)
  state, _ = step(state, {"image": images}, jax.random.key(2))
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for i in range(repeats):
    state, metrics = step(state, {"image": images}, jax.random.key(3 + i))
  jax.block_until_ready(metrics)
  return (time.perf_counter() - t0) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--widths", default="16,64")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--no_step", action="store_true")
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; auto -> "
        f"{dcgan_tf.resolve_conv_impl('auto')}")
  widths = [int(w) for w in args.widths.split(",")]
  for width in widths:
    layer_table(width, args.batch, args.repeats)
  if args.no_step:
    return
  print("\nStacked MNIST :pacgan train step, seconds per step (xla / patches, speed-up)")
  for width in widths:
    for pack in (1, 2):
      xla, patches = (step_seconds(width, pack, impl, args.repeats) for impl in IMPLS)
      print(f"  width {width:3d} pack {pack}: {xla:7.3f} / {patches:7.3f}  {xla / patches:5.1f}x")


if __name__ == "__main__":
  main()
