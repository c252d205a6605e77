"""Step time of the DCGAN train step at a fixed global batch: one device vs jit vs pmap.

    python benchmarks/parallel.py [--devices=8] [--batch=64] [--image_size=64] [--steps=5]

`--devices=N` simulates N CPU devices (XLA_FLAGS) when no accelerator is present;
on a GPU/TPU machine the real local devices are used. Prints compile time,
steady-state step time and images/s for each kind.
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices (CPU only)")
parser.add_argument("--batch", type=int, default=64, help="global batch")
parser.add_argument("--image_size", type=int, default=64)
parser.add_argument("--width", type=int, default=64, help="ngf = ndf")
parser.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
parser.add_argument("--kinds", default="none,jit,pmap")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={args.devices}")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import jaxgan  # noqa: E402


def make_state():
  size = args.image_size
  return jaxgan.create_state(
      jax.random.key(0),
      generator=jaxgan.models.DCGANGenerator(image_size=size, ngf=args.width),
      discriminator=jaxgan.models.DCGANDiscriminator(image_size=size, ndf=args.width),
      g_optimizer=optax.adam(2e-4, b1=0.5), d_optimizer=optax.adam(2e-4, b1=0.5),
      latent_dim=100, data_shape=(size, size, 3))


def bench(kind):
  step = jaxgan.parallel.data_parallel_step(kind)
  x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.image_size, args.image_size, 3))
  batch = step.shard_batch({"image": x.astype(np.float32)})
  state, rng = step.replicate(make_state()), jax.random.key(1)
  t = time.perf_counter()
  state, metrics = step.sharded(state, batch, rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step.sharded(state, batch, rng)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t) / args.steps
  return step.num_devices, compile_s, step_s


print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices, "
      f"{os.cpu_count()} CPU cores; DCGAN-{args.image_size} width {args.width}, global batch "
      f"{args.batch}, {args.steps} timed steps")
print(f"{'kind':<6}{'devices':>8}{'first step (s)':>16}{'step (s)':>10}{'img/s':>9}")
for kind in args.kinds.split(","):
  n, compile_s, step_s = bench(kind)
  print(f"{kind:<6}{n:>8}{compile_s:>16.2f}{step_s:>10.3f}{args.batch / step_s:>9.1f}", flush=True)
