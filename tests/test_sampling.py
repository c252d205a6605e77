"""Discriminator rejection sampling: exact on a GAN whose D logit is known, packs, calibration."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import cli
from jaxgan import mixture_benchmark, sampling, trainer
from jaxgan.errors import ConfigError
from jaxgan.train import create_state


class Shift(nn.Module):
  """G(z) = z + b: with z ~ N(0, 1) and b = 0, G's samples are N(0, 1)."""

  @nn.compact
  def __call__(self, z, train: bool = True):
    return z + self.param("b", nn.initializers.zeros, (1,))


class Quadratic(nn.Module):
  """logit = -a * sum over the pack of (x - c)^2: additive over packed samples, as an optimal
  packed D is, and for one N(0, 1) sample the log ratio to p(x) ~ N(0, 1) exp(-a (x - c)^2)."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    a = self.param("a", nn.initializers.constant(0.5), ())
    c = self.param("c", nn.initializers.constant(1.0), ())
    return -a * jnp.sum(jnp.square(x - c), axis=-1)


class Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = True):
    return nn.Dense(1, kernel_init=nn.initializers.zeros)(x.reshape(x.shape[0], -1))[:, 0]


def one_d_gan(discriminator, pack=1):
  return create_state(jax.random.key(0), generator=Shift(), discriminator=discriminator,
                      g_optimizer=optax.adam(1e-3), d_optimizer=optax.adam(1e-3),
                      latent_dim=1, data_shape=(1,), pack=pack)


@pytest.mark.parametrize("pack", [1, 2])
def test_rejection_sampling_draws_the_distribution_d_implies(pack):
  # G = N(0, 1); D's logit -0.5 (x - 1)^2 (per sample). Kept samples follow
  # N(0, 1) exp(-0.5 (x - 1)^2) ~ N(0.5, 0.5). With pack 2, every sample's score gets the same
  # partners' constant, which the maximum cancels: the same distribution.
  state = one_d_gan(Quadratic(), pack)
  x, stats = sampling.rejection_sample(state, jax.random.key(1), 6_000, batch_size=4_000)
  assert x.shape == (6_000, 1)
  assert x.mean() == pytest.approx(0.5, abs=4 * np.sqrt(0.5 / 6_000))
  assert x.var() == pytest.approx(0.5, rel=0.08)
  # Acceptance: E exp(-0.5 (x - 1)^2) under N(0, 1) = exp(-1/4) / sqrt(2).
  assert stats.acceptance == pytest.approx(np.exp(-0.25) / np.sqrt(2), abs=0.02)
  # A shift at F's q-quantile (Azadi et al.): roughly a fraction 1 - q passes with probability
  # above 1/2, whatever D's scale. q = 0.2 filters more softly than exact here, 0.9 harder.
  soft, soft_stats = sampling.rejection_sample(state, jax.random.key(1), 2_000,
                                               batch_size=4_000, shift_quantile=0.2)
  hard, hard_stats = sampling.rejection_sample(state, jax.random.key(1), 1_000,
                                               batch_size=4_000, shift_quantile=0.9)
  assert soft_stats.shift < 0 < hard_stats.shift
  assert soft_stats.acceptance > stats.acceptance + 0.1 > hard_stats.acceptance + 0.2
  assert soft.var() > x.var() > hard.var()  # a softer filter keeps more of G's spread


def test_a_sampler_continues_one_stream_across_calls():
  # experiments.evaluate --drs draws its samples a batch at a time from one sampler: the first
  # call is rejection_sample itself, later calls draw new candidates, and the counts add up.
  state = one_d_gan(Quadratic())
  sampler = sampling.RejectionSampler(state, jax.random.key(1), batch_size=300, burn_in=300)
  first, second = sampler.sample(200), sampler.sample(200)
  alone, alone_stats = sampling.rejection_sample(state, jax.random.key(1), 200, batch_size=300,
                                                 burn_in=300)
  np.testing.assert_array_equal(first, alone)
  assert second.shape == (200, 1) and not np.isin(second, first).any()
  stats = sampler.stats
  assert stats.candidates > alone_stats.candidates and stats.candidates % 300 == 0
  assert stats.accepted >= 400 and stats.acceptance == stats.accepted / stats.candidates


def test_packed_scores_average_the_packs_with_x_in_each_slot():
  state = one_d_gan(Linear(), pack=2)
  state = state.replace(d_params={"Dense_0": {"kernel": jnp.array([[2.0], [-3.0]]),
                                              "bias": jnp.array([0.5])}})
  x = jnp.array([[1.0], [-2.0]])
  partners = jnp.array([[[10.0]], [[20.0]], [[30.0]]])  # K = 3 partner sets of one sample
  # Pack [x, p] for k = 0 and 2, [p, x] for k = 1: 2 * first - 3 * second + 0.5.
  expected = np.mean([2 * x[:, 0] - 30 + 0.5, 40 - 3 * x[:, 0] + 0.5, 2 * x[:, 0] - 90 + 0.5],
                     axis=0)
  np.testing.assert_allclose(sampling.sample_scores(state, x, partners), expected, rtol=1e-6)
  with pytest.raises(ValueError, match=r"partners must have shape \[K, 1, 1\]"):
    sampling.sample_scores(state, x)


def test_acceptance_probability_is_the_density_ratio_over_its_maximum():
  scores = jnp.array([-3.0, -1.0, 0.0, 2.0])
  p = sampling.acceptance_probability(scores, 0.0)
  np.testing.assert_allclose(p, [np.exp(-3.0), np.exp(-1.0), 1.0, 1.0], rtol=1e-4)
  exact = sampling.acceptance_probability(scores[:3], 2.0)
  softer = sampling.acceptance_probability(scores[:3], 2.0, shift=-1.0)
  harder = sampling.acceptance_probability(scores[:3], 2.0, shift=1.0)
  assert np.all(np.diff(softer) > 0) and np.all(softer > exact) and np.all(harder < exact)


def test_calibration_makes_d_the_log_density_ratio():
  # Real N(1, 1) against G's N(0, 1): log ratio x - 1/2, which a linear D can represent.
  state = one_d_gan(Linear())
  real = 1.0 + jax.random.normal(jax.random.key(3), (20_000, 1))
  calibrated = sampling.calibrate_discriminator(state, real, jax.random.key(4), steps=600,
                                                batch_size=512, lr=0.05)
  dense = calibrated.d_params["Dense_0"]
  assert float(dense["kernel"][0, 0]) == pytest.approx(1.0, abs=0.1)
  assert float(dense["bias"][0]) == pytest.approx(-0.5, abs=0.1)
  assert calibrated.g_params == state.g_params  # G is left as it was
  with pytest.raises(ValueError, match=r"data_shape is \(1,\); pass real data \[N, 1\]"):
    sampling.calibrate_discriminator(state, jnp.zeros((10, 2)), jax.random.key(0))


def test_rejection_sampling_errors_name_the_fix():
  state = one_d_gan(Quadratic()).replace(d_params={"a": jnp.array(1e4), "c": jnp.array(0.0)})
  with pytest.raises(sampling.TooFewAccepted,
                     match="kept .* short of num=500; raise max_candidates") as short:
    sampling.rejection_sample(state, jax.random.key(0), 500, batch_size=1_000,
                              max_candidates=2_000)
  assert short.value.candidates == 2_000 and short.value.accepted < short.value.num == 500
  # The programs' --drs flags name their own fix, in one line.
  with pytest.raises(ConfigError, match=r"^--drs: D kept \d+ of 2000 samples of G, short of "
                     r"500; soften the filter \(--drs_shift_quantile=0.95\)"):
    with cli.drs_shortfall():
      sampling.rejection_sample(state, jax.random.key(0), 500, batch_size=1_000,
                                max_candidates=2_000)
  with pytest.raises(ValueError, match="shift_quantile must be in"):
    sampling.rejection_sample(state, jax.random.key(0), 10, shift_quantile=1.5)
  with pytest.raises(ValueError, match="class-conditional GAN .* not supported"):
    sampling.rejection_sample(state.replace(num_classes=10), jax.random.key(0), 10)


def test_drs_runs_on_a_dcgan_with_numpy_real_images():
  """The image path: a BatchNorm DCGAN (D in inference mode), real images as a NumPy array
  (as a data pipeline gives them), a few calibration steps, then filtered samples."""
  from helpers import tiny_dcgan_state

  state = tiny_dcgan_state()
  real = np.random.default_rng(0).uniform(-1, 1, (64, *state.data_shape)).astype(np.float32)
  calibrated = sampling.calibrate_discriminator(state, real, jax.random.key(0), steps=3,
                                                batch_size=16)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), calibrated.d_params,
                         state.d_params)
  assert all(jax.tree.leaves(changed))
  samples, stats = sampling.rejection_sample(calibrated, jax.random.key(1), 8, batch_size=32,
                                             burn_in=32)
  assert samples.shape == (8, *state.data_shape) and np.all(np.isfinite(samples))
  assert 0 < stats.acceptance <= 1


def test_a_bad_shift_quantile_is_refused_before_any_calibration(tmp_path):
  # Refused before the run is even read (there is none here), not after minutes of calibration.
  with pytest.raises(ConfigError, match=r"shift_quantile must be in \(0, 1\) or None, got 1.5"):
    trainer.drs_sampler(tmp_path / "no-run", shift_quantile=1.5)
  with pytest.raises(ConfigError, match=r"shift_quantile must be in \(0, 1\) or None, got 0.0"):
    mixture_benchmark.rejection(tmp_path / "no-run", shift_quantile=0.0)
