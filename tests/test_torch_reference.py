"""jaxgan's DCGAN step with reuse_fake=True is pytorch/examples' DCGAN iteration (as transcribed in
benchmarks/torch_reference.py, which benchmarks/train_step.py times): same networks, same
losses, same updates, from the same weights and noise. Needs torch (the [bench] or [fidcheck]
extra); skipped without it."""

import pathlib
import sys

import jax
import numpy as np
import optax
import pytest

import jaxgan
from jaxgan import train

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install -e '.[bench]')")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_reference  # noqa: E402


def _kernels(state):
  """jaxgan's convolution kernels ([kh, kw, in, out]) in the order of PyTorch's modules."""
  g, d = state.g_params, state.d_params
  return ([g["Project_0"]] + [g[f"Upsample2x_{i}"] for i in range(4)],
          [d[f"Conv_{i}"] for i in range(5)])


def _to_torch(state, netG, netD):
  """Copies jaxgan's parameters into the PyTorch modules."""
  g_convs, d_convs = _kernels(state)
  g_bns = [state.g_params[f"BatchNorm_{i}"] for i in range(4)]
  d_bns = [state.d_params[f"BatchNorm_{i}"] for i in range(3)]
  t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
  with torch.no_grad():
    convs = [m for m in netG if isinstance(m, torch.nn.ConvTranspose2d)]
    for m, p in zip(convs, g_convs):  # ConvTranspose2d weight: [in, out, kh, kw]
      m.weight.copy_(t(p["kernel"]).permute(2, 3, 0, 1))
    for net, bns in ((netG, g_bns), (netD, d_bns)):
      for m, p in zip([m for m in net if isinstance(m, torch.nn.BatchNorm2d)], bns):
        m.weight.copy_(t(p["scale"]))
        m.bias.copy_(t(p["bias"]))
    for m, p in zip([m for m in netD if isinstance(m, torch.nn.Conv2d)], d_convs):
      m.weight.copy_(t(p["kernel"]).permute(3, 2, 0, 1))  # Conv2d weight: [out, in, kh, kw]


def test_one_iteration_equals_pytorch_examples_dcgan():
  batch, width, lr = 8, 8, 0.05
  state = jaxgan.create_state(
      jax.random.key(0),
      generator=jaxgan.models.DCGANGenerator(ngf=width),
      discriminator=jaxgan.models.DCGANDiscriminator(ndf=width),
      g_optimizer=optax.sgd(lr), d_optimizer=optax.sgd(lr), latent_dim=100,
      data_shape=(64, 64, 3), reuse_fake=True)
  real = np.array(jax.random.uniform(jax.random.key(1), (batch, 64, 64, 3), minval=-1, maxval=1))
  rng = jax.random.key(2)
  d_key, _ = jax.random.split(jax.random.fold_in(rng, 0))
  z = np.array(train.latents(jax.random.fold_in(d_key, 0), batch, 100))  # writable, for torch

  netG, netD = torch_reference.build(ngf=width, ndf=width)
  _to_torch(state, netG, netD)
  iteration = torch_reference.make_iteration(
      netG, netD, batch, optimizer="sgd", lr=lr,
      noise_fn=lambda: torch.from_numpy(z).reshape(batch, 100, 1, 1))
  d_loss, g_loss = iteration(torch.from_numpy(real).permute(0, 3, 1, 2).contiguous())

  new, metrics = jax.jit(train.train_step)(state, {"image": real}, rng)
  np.testing.assert_allclose(metrics["d_loss"], d_loss.item(), rtol=1e-5)
  np.testing.assert_allclose(metrics["g_loss"], g_loss.item(), rtol=1e-5)
  g_convs, d_convs = _kernels(new)
  for net, params, perm in ((netG, g_convs, (2, 3, 0, 1)), (netD, d_convs, (3, 2, 0, 1))):
    kind = torch.nn.ConvTranspose2d if net is netG else torch.nn.Conv2d
    for m, p in zip([m for m in net if isinstance(m, kind)], params):
      want = m.weight.detach().numpy()
      np.testing.assert_allclose(np.transpose(np.array(p["kernel"]), perm), want,
                                 rtol=1e-4, atol=1e-4 * np.abs(want).max())
