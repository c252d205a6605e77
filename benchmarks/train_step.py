"""DCGAN-64 train step, jaxgan beside PyTorch, in one invocation on the same machine.

    python benchmarks/train_step.py [--batches=64,128] [--steps=5] [--torch_compile]
                                    [--torch_compile_modes=default,reduce-overhead]
                                    [--dtype=float32|bfloat16] [--compile_cache]

The network is the classic DCGAN at 64x64 (nz 100, ngf = ndf = 64; G 3.58M and
D 2.77M parameters) with Adam(2e-4, 0.5), the algorithm of pytorch/examples'
`dcgan` (jaxgan: `reuse_fake=True`). Each measurement runs in its own
subprocess (its own threads and memory). Prints, per framework and batch:
compile (or first-iterations) time, steady-state iterations/s and images/s,
peak memory, MFU where the device's peak is known, and the ratio of images/s
to PyTorch eager's. `--compile_cache` also times a compile that hits a
persistent compilation cache. PyTorch comes from the `[bench]` extra; without
it only jaxgan is measured. On a GPU machine both run on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Dense peak FLOP/s by device kind and compute dtype (float32 matmuls run as TF32 on these).
PEAK_FLOPS = {"H100": {"bfloat16": 989e12, "float32": 495e12},
              "H200": {"bfloat16": 989e12, "float32": 495e12},
              "A100": {"bfloat16": 312e12, "float32": 156e12}}


def iteration_flops(g_forward: float, d_forward: float, d_first_layer: float) -> float:
  """FLOPs of one iteration of the PyTorch DCGAN algorithm, from those of one forward pass of
  G, of D, and of D's first convolution:
  - G: forward once (D's update and G's share it), backward once (input and kernel
    gradients, 2x): 3 forward passes;
  - D: forward 3 times (real, fake, fake again after D's update); in D's update, both
    passes' kernel and input gradients (2x each), less the input gradient of the first
    layer (images need none); in G's update, the input gradients only (1x): 8 forward
    passes, less 2 of the first layer."""
  return 3 * g_forward + 8 * d_forward - 2 * d_first_layer


def dcgan_forward_flops(nz: int = 100, ngf: int = 64, ndf: int = 64
                        ) -> tuple[float, float, float]:
  """Multiply-adds x 2 of one sample's forward pass of G, of D, and of D's first convolution,
  every kernel tap counted as PyTorch computes it (padded taps included; a transposed
  convolution as its GEMM + col2im form, 16 taps per input pixel, no structural zeros)."""
  g = 2 * 16 * nz * ngf * 8  # project: 1x1 -> 4x4
  ch, hw = ngf * 8, 4
  for cout in (ngf * 4, ngf * 2, ngf, 3):  # transposed conv 4x4 s2
    g += 2 * hw * hw * 16 * ch * cout
    ch, hw = cout, hw * 2
  layers = []
  ch, hw = 3, 64
  for cout in (ndf, ndf * 2, ndf * 4, ndf * 8):  # conv 4x4 s2
    hw //= 2
    layers.append(2 * hw * hw * 16 * ch * cout)
    ch = cout
  return g, sum(layers) + 2 * 16 * ch, layers[0]  # D: and the last 4x4 conv to one logit


def dcgan_model_flops(batch: int, nz: int = 100, ngf: int = 64, ndf: int = 64) -> float:
  """FLOPs of one DCGAN iteration at `batch` (`iteration_flops` of `dcgan_forward_flops`)."""
  return batch * iteration_flops(*dcgan_forward_flops(nz, ngf, ndf))


def peak_flops(device_kind: str, dtype: str) -> float | None:
  for name, peaks in PEAK_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peaks[dtype]
  return None


def jaxgan_worker(args) -> dict:
  if args.cache_dir:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = args.cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  sys.path.insert(0, ROOT)
  import jaxgan

  dtype = {"float32": None, "bfloat16": jnp.bfloat16}[args.dtype]
  state = jaxgan.create_state(
      jax.random.key(0),
      generator=jaxgan.models.DCGANGenerator(upsample=args.upsample, conv_impl=args.conv_impl,
                                             dtype=dtype),
      discriminator=jaxgan.models.DCGANDiscriminator(conv_impl=args.conv_impl, dtype=dtype),
      g_optimizer=optax.adam(2e-4, b1=0.5), d_optimizer=optax.adam(2e-4, b1=0.5),
      latent_dim=100, data_shape=(64, 64, 3), reuse_fake=args.reuse_fake)
  batch = {"image": jax.device_put(np.random.default_rng(0).uniform(
      -1, 1, (args.batch, 64, 64, 3)).astype(np.float32))}
  rng = jax.random.key(1)
  step = jax.jit(jaxgan.train_step, donate_argnums=0)
  t = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t
  state, metrics = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - t) / args.steps)
  step_s = float(np.median(times))
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  peak = (stats or {}).get("peak_bytes_in_use") or (
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
  return {"framework": "jaxgan", "version": f"jax {jax.__version__}", "device": device.device_kind,
          "platform": device.platform, "batch": args.batch, "compile_s": compile_s,
          "step_s": step_s, "it_per_s": 1 / step_s, "img_per_s": args.batch / step_s,
          "peak_bytes": int(peak), "finite": bool(np.isfinite(float(metrics["g_loss"])))}


def run_worker(argv: list[str], timeout: float | None = None) -> dict | None:
  try:
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    print(f"  {' '.join(argv[:2])}: no result within {timeout:.0f} s", file=sys.stderr)
    return None
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not lines:
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    print(f"  {' '.join(argv[:2])}: failed: {tail}", file=sys.stderr)
    return None
  return json.loads(lines[-1])


def have_torch() -> bool:
  return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="64,128")
  parser.add_argument("--steps", type=int, default=5, help="timed iterations (after warm-up)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="time --steps iterations this many times; report the median")
  parser.add_argument("--worker_timeout", type=float, default=0,
                      help="give up on a measurement after this many seconds (0: never)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="jaxgan's compute dtype")
  parser.add_argument("--upsample", default="auto")
  parser.add_argument("--conv_impl", default="auto")
  parser.add_argument("--reuse_fake", type=lambda s: s.lower() in ("1", "true", "yes"),
                      default=True, help="the PyTorch example's algorithm (default true)")
  parser.add_argument("--torch_compile", action="store_true", help="also time torch.compile")
  parser.add_argument("--torch_compile_modes", default="default",
                      help="with --torch_compile: its modes to time, comma-separated "
                           "(default, reduce-overhead, max-autotune, ...)")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--compile_cache", action="store_true",
                      help="also time a compile that hits a persistent compilation cache")
  parser.add_argument("--peak_tflops", type=float, default=0.0,
                      help="the device's peak TFLOP/s for MFU (default: known GPUs only)")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
  parser.add_argument("--cache_dir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker == "jaxgan":
    print(json.dumps(jaxgan_worker(args)))
    return

  timeout = args.worker_timeout or None
  common = [f"--steps={args.steps}", f"--repeats={args.repeats}", f"--dtype={args.dtype}",
            f"--upsample={args.upsample}", f"--conv_impl={args.conv_impl}",
            f"--reuse_fake={args.reuse_fake}"]
  torch_ok = not args.no_torch and have_torch()
  if not torch_ok and not args.no_torch:
    print("PyTorch is not installed (pip install -e '.[bench]'): measuring jaxgan only",
          file=sys.stderr)
  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    row = run_worker([__file__, "--worker=jaxgan", f"--batch={batch}", *common], timeout)
    if row:
      rows.append(row)
    device = "cuda" if row and row["platform"] == "gpu" else "cpu"
    if torch_ok:
      ref = [os.path.join(HERE, "torch_reference.py"), f"--batch={batch}",
             f"--steps={args.steps}", f"--repeats={args.repeats}", f"--device={device}"]
      modes = args.torch_compile_modes.split(",") if args.torch_compile else []
      for extra in [[]] + [["--compile", f"--compile_mode={mode}"] for mode in modes]:
        r = run_worker(ref + extra, timeout)
        if r:
          rows.append(r)
  cache_rows = []
  if args.compile_cache:
    with tempfile.TemporaryDirectory() as cache:
      for label in ("cold cache", "warm cache"):
        r = run_worker([__file__, "--worker=jaxgan", f"--batch={args.batches.split(',')[0]}",
                        f"--cache_dir={cache}", *common, "--steps=1", "--repeats=1"], timeout)
        if r:
          cache_rows.append((label, r["compile_s"]))

  print(f"\nDCGAN-64 train iteration (jaxgan dtype={args.dtype}, reuse_fake={args.reuse_fake}, "
        f"upsample={args.upsample}, conv_impl={args.conv_impl})")
  header = ("framework", "batch", "device", "compile/warm-up s", "it/s", "img/s", "peak MiB",
            "MFU", "vs torch eager")
  print(" | ".join(header))
  print(" | ".join("---" for _ in header))
  for r in rows:
    eager = next((e for e in rows if e["framework"] == "torch eager" and e["batch"] == r["batch"]),
                 None)
    peak = args.peak_tflops * 1e12 or peak_flops(
        str(r["device"]), args.dtype if r["framework"] == "jaxgan" else "float32")
    mfu = f"{dcgan_model_flops(r['batch']) * r['it_per_s'] / peak:.1%}" if peak else "-"
    first = r.get("compile_s", r.get("warmup_s"))
    print(" | ".join([f"{r['framework']} ({r['version']})", str(r["batch"]), str(r["device"]),
                      f"{first:.1f}", f"{r['it_per_s']:.3f}", f"{r['img_per_s']:.1f}",
                      f"{r['peak_bytes'] / 2**20:.0f}", mfu,
                      f"{r['img_per_s'] / eager['img_per_s']:.2f}x" if eager else "-"]))
  for label, seconds in cache_rows:
    print(f"jaxgan compile, persistent compilation cache ({label}): {seconds:.1f} s")
  print(f"model GFLOP per iteration at batch 64: {dcgan_model_flops(64) / 1e9:.1f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"rows": rows, "compile_cache": cache_rows}, f, indent=1)


if __name__ == "__main__":
  main()
