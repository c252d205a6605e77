"""Where the DCGAN-64 step's time goes on CPU: its convolutions timed one by one.

    python benchmarks/conv_budget.py [--batch=64] [--repeats=10] [--no_step]

Every convolution that one jaxgan DCGAN-64 iteration computes on CPU, through the library
functions the step calls with their CPU defaults (`layers.conv` for D,
`layers.upsample_by_phases` for G), forward pass and each gradient jitted and timed alone,
then multiplied by how often one iteration computes it (`benchmarks/train_step.py`'s
`iteration_flops` gives the passes). Prints per operation: calls per iteration, ms per
call, GFLOP/s (model FLOPs, every tap counted as PyTorch computes it), ms per iteration;
then their sum beside the whole step's time and PyTorch eager's (each in its own
subprocess, as `train_step.py` runs them; `--no_step` skips both), and the best matrix
product rate XLA reaches here (a 2048^3 float32 product). The sum is about a floor for the step
with these kernels: the rest of the step (BatchNorm, activations, Adam) only adds to it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import jax
import jax.numpy as jnp

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from jaxgan.models import layers  # noqa: E402
from kernel_grad import milliseconds  # noqa: E402
import train_step  # noqa: E402

D_LAYERS = ((64, 3, 64), (32, 64, 128), (16, 128, 256), (8, 256, 512))  # input hw, cin, cout
G_LAYERS = ((4, 512, 256), (8, 256, 128), (16, 128, 64), (32, 64, 3))


def _forward_and_gradients(layer, x_shape, k_shape, dy_shape):
  """(forward, input gradient, kernel gradient) of `layer(x, kernel)`, each alone (XLA drops
  what a gradient does not need), with their argument shapes."""
  def input_gradient(x, k, dy):
    return jax.vjp(lambda v: layer(v, k), x)[1](dy)[0]

  def kernel_gradient(x, k, dy):
    return jax.vjp(lambda kk: layer(x, kk), k)[1](dy)[0]

  shapes = (x_shape, k_shape, dy_shape)
  return [("forward", layer, shapes[:2]), ("input gradient", input_gradient, shapes),
          ("kernel gradient", kernel_gradient, shapes)]


def step_operations(batch: int):
  """(name, calls per iteration, function, argument shapes, model FLOPs per call) of the
  convolutions of one DCGAN-64 iteration on CPU (reuse_fake, the PyTorch example's
  algorithm), each as the library computes it by default (`layers.conv` for D's
  convolutions, `layers.upsample_by_phases` for G's transposed ones). D: forward 3x; input
  gradients 3x (both passes of D's update and G's update), 1x for the first layer (G's
  update only); kernel gradients 2x (D's update). G: each 1x."""
  def d_layer(x, k):
    return layers.conv(x, k, (2, 2), ((1, 1), (1, 1)))

  ops = []
  for i, (hw, cin, cout) in enumerate(D_LAYERS):
    calls = {"forward": 3, "input gradient": 1 if i == 0 else 3, "kernel gradient": 2}
    parts = _forward_and_gradients(d_layer, (batch, hw, hw, cin), (4, 4, cin, cout),
                                   (batch, hw // 2, hw // 2, cout))
    ops += [(f"D {hw}x{hw}x{cin} -> {cout}: {part}", calls[part], fn, shapes,
             2 * batch * (hw // 2) ** 2 * 16 * cin * cout) for part, fn, shapes in parts]
  for hw, cin, cout in G_LAYERS:
    parts = _forward_and_gradients(layers.upsample_by_phases, (batch, hw, hw, cin),
                                   (4, 4, cin, cout), (batch, 2 * hw, 2 * hw, cout))
    ops += [(f"G {hw}x{hw}x{cin} -> {cout}: {part}", 1, fn, shapes,
             2 * batch * hw * hw * 16 * cin * cout) for part, fn, shapes in parts]
  return ops


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n))
  ms, _ = milliseconds(lambda a: a @ a, (a,), repeats)
  return 2 * n ** 3 / ms / 1e6


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--no_step", action="store_true",
                      help="skip timing the whole step and PyTorch eager's")
  args = parser.parse_args()
  if jax.default_backend() != "cpu":
    sys.exit("conv_budget.py times the CPU paths; run it on a CPU (JAX_PLATFORMS=cpu)")
  print(f"DCGAN-64 convolutions, batch {args.batch}, jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs")
  print("operation | calls | ms per call | GFLOP/s | ms per iteration")
  print("--- | --- | --- | --- | ---")
  total_ms = total_flops = 0.0
  for name, calls, fn, shapes, flops in step_operations(args.batch):
    inputs = [jax.random.normal(jax.random.key(i), s) for i, s in enumerate(shapes)]
    ms, _ = milliseconds(fn, inputs, args.repeats)
    total_ms += calls * ms
    total_flops += calls * flops
    print(f"{name} | {calls} | {ms:.1f} | {flops / ms / 1e6:.0f} | {calls * ms:.1f}", flush=True)
  model = train_step.dcgan_model_flops(args.batch)
  print(f"convolutions | | | {total_flops / total_ms / 1e6:.0f} | **{total_ms:.0f}**")
  print(f"\ntheir model FLOPs: {total_flops / 1e9:.1f} of the iteration's {model / 1e9:.1f} GFLOP")
  rate = matmul_gflops()
  print(f"XLA's 2048^3 float32 matrix product: {rate:.0f} GFLOP/s; the iteration's FLOPs at "
        f"that rate: {model / rate / 1e6:.0f} ms")
  if args.no_step:
    return
  common = [f"--batch={args.batch}", "--steps=5"]
  step = train_step.run_worker([str(HERE / "train_step.py"), "--worker=jaxgan", *common])
  eager = (train_step.run_worker([str(HERE / "torch_reference.py"), *common, "--device=cpu"])
           if train_step.have_torch() else None)
  for label, row in (("jaxgan step", step), ("PyTorch eager iteration", eager)):
    if row:
      print(f"{label}: {row['step_s'] * 1e3:.0f} ms ({row['img_per_s']:.1f} img/s, "
            f"{model * row['it_per_s'] / 1e9:.0f} GFLOP/s)")
  if eager:
    target = eager["step_s"] / 1.25
    print(f"issue 8's CPU target, 1.25x PyTorch eager's images/s: {target * 1e3:.0f} ms per "
          f"iteration, {model / target / 1e9:.0f} GFLOP/s ({model / target / 1e9 / rate:.0%} "
          f"of the matrix product's rate); the convolutions alone take {total_ms:.0f} ms")


if __name__ == "__main__":
  main()
