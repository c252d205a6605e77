"""The PyTorch reference for `benchmarks/train_step.py`: pytorch/examples' DCGAN, one iteration.

The networks and the algorithm are those of the classic example
(github.com/pytorch/examples, `dcgan/main.py`): G = ConvTranspose2d/BatchNorm/ReLU,
D = Conv2d/BatchNorm/LeakyReLU with a final Sigmoid, BCELoss, Adam(2e-4,
betas=(0.5, 0.999)); each iteration updates D on a real batch and on G(z)
(detached), then G on D(G(z)) with the same G(z), as the example does.

    python benchmarks/torch_reference.py [--batch=64] [--steps=5] [--repeats=1]
                                         [--device=cpu|cuda] [--compile [--compile_mode=M]]

prints one JSON line; `train_step.py` runs it in a subprocess beside jaxgan.
Needs the optional `[bench]` extra (torch).
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def build(nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3):
  """(netG, netD) of pytorch/examples' DCGAN at 64x64, with its N(0, 0.02) init."""
  from torch import nn

  netG = nn.Sequential(
      nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4),
      nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
      nn.ReLU(True),
      nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
      nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
  netD = nn.Sequential(
      nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
      nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
      nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
      nn.LeakyReLU(0.2, inplace=True),
      nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

  def weights_init(m):
    name = type(m).__name__
    if "Conv" in name:
      nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)

  netG.apply(weights_init)
  netD.apply(weights_init)
  return netG, netD


def make_iteration(netG, netD, batch: int, nz: int = 100, device: str = "cpu",
                   optimizer: str = "adam", lr: float = 2e-4, noise_fn=None):
  """One training iteration of the example, as a function of a real batch [B, 3, 64, 64].

  `optimizer="sgd"` and `noise_fn` (returns the noise [B, nz, 1, 1]) exist for
  tests/test_torch_reference.py, which checks that jaxgan's step is this one.
  """
  import torch
  from torch import nn, optim

  criterion = nn.BCELoss()
  if optimizer == "adam":
    opt_d = optim.Adam(netD.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = optim.Adam(netG.parameters(), lr=lr, betas=(0.5, 0.999))
  else:
    opt_d, opt_g = optim.SGD(netD.parameters(), lr=lr), optim.SGD(netG.parameters(), lr=lr)
  ones = torch.ones(batch, device=device)
  zeros = torch.zeros(batch, device=device)

  def iteration(real):
    netD.zero_grad()
    err_real = criterion(netD(real).view(-1), ones)
    err_real.backward()
    noise = noise_fn() if noise_fn else torch.randn(batch, nz, 1, 1, device=device)
    fake = netG(noise)
    err_fake = criterion(netD(fake.detach()).view(-1), zeros)
    err_fake.backward()
    opt_d.step()
    netG.zero_grad()
    err_g = criterion(netD(fake).view(-1), ones)
    err_g.backward()
    opt_g.step()
    return err_real + err_fake, err_g

  return iteration


def run(batch: int, steps: int, warmup: int = 3, device: str = "cpu", compile: bool = False,
        threads: int = 0, repeats: int = 1, compile_mode: str = "default") -> dict:
  """Times `steps` iterations `repeats` times after `warmup` ones; returns the figures (the
  median time) as a dict. On CUDA, cuDNN picks its fastest kernels (`cudnn.benchmark`), as
  the example does."""
  import statistics

  import torch

  if threads:
    torch.set_num_threads(threads)
  if device.startswith("cuda"):
    torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  netG, netD = build()
  netG.to(device)
  netD.to(device)
  if compile:
    # The networks, as a user compiles them. Not the whole iteration: its backward passes
    # break the graph, and err_fake's backward would free what err_g's needs from G(z).
    netG, netD = (torch.compile(net, mode=compile_mode) for net in (netG, netD))
  iteration = make_iteration(netG, netD, batch, device=device)
  real = torch.rand(batch, 3, 64, 64, device=device) * 2 - 1
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  t = time.perf_counter()
  for _ in range(warmup):
    iteration(real)
  sync()
  first_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(steps):
      losses = iteration(real)
    sync()
    times.append((time.perf_counter() - t) / steps)
  step_s = statistics.median(times)
  if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated()
  else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  name = "torch eager"
  if compile:
    name = "torch.compile" + (f" {compile_mode}" if compile_mode != "default" else "")
  return {"framework": name,
          "version": torch.__version__, "batch": batch,
          "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
          "threads": torch.get_num_threads(), "warmup_s": first_s, "step_s": step_s,
          "it_per_s": 1 / step_s, "img_per_s": batch / step_s, "peak_bytes": peak,
          "finite": bool(all(torch.isfinite(v).item() for v in losses))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=3,
                      help="untimed iterations first (torch.compile compiles in them)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="report the median of this many timings")
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--compile", action="store_true", help="torch.compile G and D")
  parser.add_argument("--compile_mode", default="default",
                      help="torch.compile's mode: default | reduce-overhead | max-autotune | ...")
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  args = parser.parse_args()
  try:
    import torch  # noqa: F401
  except ImportError:
    raise SystemExit("torch_reference.py needs PyTorch: pip install -e '.[bench]'")
  print(json.dumps(run(args.batch, args.steps, args.warmup, args.device, args.compile,
                       args.threads, args.repeats, args.compile_mode)))


if __name__ == "__main__":
  main()
