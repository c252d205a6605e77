"""Discriminator rejection sampling (DRS; Azadi et al., ICLR 2019): G's samples, kept or
dropped by D.

For the logistic loss, the optimal D's logit is log p_data(x) / p_G(x). Keeping a sample
of G with probability exp(logit - max logit) is then rejection sampling from p_data
itself, restricted to what G covers: samples where the data has no mass (the paths a
continuous G draws between separate modes, say) are dropped, and the modes G
over-weights are thinned. The D a GAN ends training with is no such estimate (it was
chasing a moving G, and often regularised), so `calibrate_discriminator` first trains D
alone, with G fixed, on the logistic loss; `rejection_sample` then filters G's samples.

    state = sampling.calibrate_discriminator(state, real_points, key)
    samples, stats = sampling.rejection_sample(state, key2, 10_000)

With PacGAN packing (`state.pack` > 1) D judges packs. At the optimum the logit of a pack
is the sum of its members' log ratios, so a sample's score is the mean logit of the packs
it forms with a few partner sets of G's samples, common to every candidate: the partners
add the same constant to every score, which the normalisation by the maximum cancels.
Class-conditional GANs are not supported (D would need each sample's label).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import losses
from jaxgan.train import GANState, generate, latents_for, pack_samples

# Azadi et al.'s epsilon: keeps log(1 - exp(d - eps)) finite at d = 0 (the maximum).
EPSILON = 1e-6


class TooFewAccepted(ValueError):
  """`RejectionSampler.sample` kept fewer than `num` samples within its candidate limit: D
  rejects nearly all of G's samples (too sharp a filter, or a D calibrated too little)."""

  def __init__(self, accepted: int, candidates: int, num: int):
    self.accepted, self.candidates, self.num = accepted, candidates, num
    super().__init__(f"rejection sampling kept {accepted} of {candidates} candidates, short "
                     f"of num={num}; raise max_candidates, set a shift_quantile (a softer "
                     "filter), or calibrate D longer")


class DRSStats(NamedTuple):
  """What a `rejection_sample` call did: acceptance = accepted / candidates (after burn-in)."""
  accepted: int
  candidates: int
  acceptance: float
  max_logit: float
  shift: float


def check_shift_quantile(shift_quantile: float | None) -> None:
  """Raises ValueError unless `shift_quantile` is None or in (0, 1); callers check it before
  a calibration, so that a bad value costs nothing."""
  if shift_quantile is not None and not 0.0 < shift_quantile < 1.0:
    raise ValueError(f"shift_quantile must be in (0, 1) or None, got {shift_quantile}")


def _check_unconditional(state: GANState) -> None:
  if state.num_classes:
    raise ValueError(f"rejection sampling of a class-conditional GAN (num_classes="
                     f"{state.num_classes}) is not supported: D's score needs each sample's "
                     "label; sample each class with an unconditional model instead")


def _discriminate(state: GANState, d_params, x: jax.Array) -> jax.Array:
  """D's logits of x [B * pack, *data_shape], packed as in training, in inference mode: [B]."""
  variables = {"params": d_params, "batch_stats": state.d_batch_stats}
  out = state.discriminator.apply(variables, pack_samples(x, state.pack), train=False)
  return out.reshape(-1)


def sample_scores(state: GANState, x: jax.Array, partners: jax.Array | None = None
                  ) -> jax.Array:
  """Each sample's estimate of log p_data(x) / p_G(x), up to a constant: [N].

  x: [N, *data_shape]. Without packing this is D's logit. With `state.pack` = m > 1,
  `partners` [K, m - 1, *data_shape] are K sets of other samples of G; the score is the mean
  over k of D's logit of the pack of x with partner set k, x taking slot k mod m (D need not
  treat slots alike).
  """
  if state.pack == 1:
    return _discriminate(state, state.d_params, x)
  m = state.pack
  if partners is None or partners.shape[1:] != (m - 1, *x.shape[1:]):
    got = None if partners is None else tuple(partners.shape)
    raise ValueError(f"pack={m}: partners must have shape [K, {m - 1}, "
                     f"{', '.join(map(str, x.shape[1:]))}], got {got}")
  logits = []
  for k in range(partners.shape[0]):
    slot = k % m
    others = jnp.broadcast_to(partners[k][None], (x.shape[0], *partners.shape[1:]))
    packs = jnp.concatenate([others[:, :slot], x[:, None], others[:, slot:]], axis=1)
    logits.append(_discriminate(state, state.d_params, packs.reshape(-1, *x.shape[1:])))
  return jnp.mean(jnp.stack(logits), axis=0)


def rejection_logit(scores: jax.Array, max_score: jax.Array | float) -> jax.Array:
  """Azadi et al.'s F(x) = d - log(1 - exp(d - eps)), d = score - max: the logit of exp(d).
  Scores above `max_score` count as the maximum."""
  d = jnp.minimum(scores - max_score, 0.0)
  return d - jnp.log1p(-jnp.exp(d - EPSILON))


def acceptance_probability(scores: jax.Array, max_score: jax.Array | float,
                           shift: jax.Array | float = 0.0) -> jax.Array:
  """Azadi et al.'s sigmoid(F(x) - shift) (`rejection_logit`).

  With shift 0 this is exp(score - max) (up to eps): exact rejection sampling for p_data. A
  negative shift accepts more (a softer filter), a positive one fewer.
  """
  return jax.nn.sigmoid(rejection_logit(scores, max_score) - shift)


def calibrate_discriminator(state: GANState, real: jax.Array, rng: jax.Array, *,
                            steps: int = 5_000, batch_size: int = 400, lr: float = 2e-4,
                            b1: float = 0.5) -> GANState:
  """D trained alone on the logistic loss against G's samples (G fixed): a state whose D
  estimates log p_data / p_G for `rejection_sample`.

  G is what `generate` samples (the EMA when the state keeps one), so D learns the ratio of
  the samples it will filter. Each step draws `batch_size` packs of `state.pack` real points
  from `real` [N, *data_shape] (with replacement) and as many of G's; Adam (b1 `b1`) decays
  linearly from `lr` to 0 over `steps`. D runs in inference mode (its BatchNorm statistics,
  if any, stay as they are), and the loss is the logistic one whatever the GAN was trained
  with, which makes the logit a log-ratio estimate for hinge- or Wasserstein-trained D too.
  Pure and jit-able (`steps` and `batch_size` static); `vmap` it over seeds.
  """
  _check_unconditional(state)
  if tuple(real.shape[1:]) != tuple(state.data_shape):
    raise ValueError(f"real samples have shape {tuple(real.shape[1:])} but the GAN's "
                     f"data_shape is {tuple(state.data_shape)}; pass real data [N, "
                     f"{', '.join(map(str, state.data_shape))}]")
  if int(steps) < 1 or int(batch_size) < 1:
    raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
  real = jnp.asarray(real)  # a NumPy array cannot be indexed by the traced step's indices
  optimizer = optax.adam(optax.linear_schedule(lr, 0.0, int(steps)), b1=b1)
  num = int(batch_size) * state.pack

  def step(carry, i):
    params, opt_state = carry
    key = jax.random.fold_in(rng, i)
    idx = jax.random.randint(jax.random.fold_in(key, 0), (num,), 0, real.shape[0])
    fake = generate(state, latents_for(state, jax.random.fold_in(key, 1), num))

    def loss_fn(p):
      return losses.discriminator_loss("non_saturating", _discriminate(state, p, real[idx]),
                                       _discriminate(state, p, fake))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, _), _ = jax.lax.scan(step, (state.d_params, optimizer.init(state.d_params)),
                                jnp.arange(int(steps)))
  return state.replace(d_params=params)


@functools.partial(jax.jit, static_argnums=2)
def _candidates(state: GANState, key: jax.Array, num: int, partners):
  x = generate(state, latents_for(state, key, num))
  return x, sample_scores(state, x, partners)


class RejectionSampler:
  """Draws samples of G that pass D's rejection test, as many calls as needed, with one
  running maximum score (Azadi et al.): `sampler.sample(num)` -> [num, *data_shape].

  Calibrate D first (`calibrate_discriminator`). `burn_in` samples of G set the maximum
  score (raised whenever a larger one turns up); candidates then come `batch_size` at a
  time, each batch with its own key, so successive calls continue one stream of samples.
  `shift_quantile`: None is exact rejection sampling (shift 0); q in (0, 1) sets the shift
  to the q-quantile of F over the burn-in samples (Azadi et al.'s practice; they use 0.95 on
  images), so that about a fraction 1 - q of the candidates pass with probability above
  1/2, whatever the scale of D's logits. `stats` counts every call so far.
  """

  def __init__(self, state: GANState, rng: jax.Array, *, batch_size: int = 10_000,
               burn_in: int = 10_000, shift_quantile: float | None = None,
               num_partners: int = 8):
    _check_unconditional(state)
    if int(batch_size) < 1 or int(burn_in) < 1 or int(num_partners) < 1:
      raise ValueError(f"batch_size, burn_in and num_partners must be >= 1, got {batch_size}, "
                       f"{burn_in} and {num_partners}")
    check_shift_quantile(shift_quantile)
    self.state, self.batch_size = state, int(batch_size)
    k_partners, k_burn, self._key = jax.random.split(rng, 3)
    self._partners = None
    if state.pack > 1:
      partners = generate(state, latents_for(state, k_partners, num_partners * (state.pack - 1)))
      self._partners = partners.reshape(num_partners, state.pack - 1, *state.data_shape)
    _, burn_scores = _candidates(state, k_burn, int(burn_in), self._partners)
    self.max_score = float(jnp.max(burn_scores))
    self.shift = 0.0
    if shift_quantile is not None:
      self.shift = float(np.quantile(np.asarray(rejection_logit(burn_scores, self.max_score)),
                                     shift_quantile))
    self.accepted = self.candidates = 0

  def sample(self, num: int, max_candidates: int | None = None) -> np.ndarray:
    """`num` accepted samples; raises `TooFewAccepted` (a ValueError) when fewer than `num`
    pass among `max_candidates` (default 100 x num) candidates of this call."""
    if int(num) < 1:
      raise ValueError(f"num must be >= 1, got {num}")
    max_candidates = 100 * int(num) if max_candidates is None else int(max_candidates)
    kept, accepted0, candidates0 = [], self.accepted, self.candidates
    while self.accepted - accepted0 < num and self.candidates - candidates0 < max_candidates:
      key = jax.random.fold_in(self._key, self.candidates)
      x, scores = _candidates(self.state, key, self.batch_size, self._partners)
      self.max_score = max(self.max_score, float(jnp.max(scores)))
      p = acceptance_probability(scores, self.max_score, self.shift)
      keep = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), p.shape) < p)
      kept.append(np.asarray(x)[keep])
      self.accepted += int(keep.sum())
      self.candidates += self.batch_size
    accepted, candidates = self.accepted - accepted0, self.candidates - candidates0
    if accepted < num:
      raise TooFewAccepted(accepted, candidates, num)
    return np.concatenate(kept)[:num]

  @property
  def stats(self) -> DRSStats:
    return DRSStats(accepted=self.accepted, candidates=self.candidates,
                    acceptance=self.accepted / max(self.candidates, 1),
                    max_logit=self.max_score, shift=self.shift)


def rejection_sample(state: GANState, rng: jax.Array, num: int, *, batch_size: int = 10_000,
                     burn_in: int = 10_000, shift_quantile: float | None = None,
                     num_partners: int = 8, max_candidates: int | None = None
                     ) -> tuple[np.ndarray, DRSStats]:
  """`num` samples of G that pass D's rejection test: ([num, *data_shape], DRSStats).

  One `RejectionSampler` call (see there for the arguments). Raises `TooFewAccepted` when
  fewer than `num` pass among `max_candidates` (default 100 x num) candidates.
  """
  if int(num) < 1:  # before the burn-in's work
    raise ValueError(f"num must be >= 1, got {num}")
  sampler = RejectionSampler(state, rng, batch_size=batch_size, burn_in=burn_in,
                             shift_quantile=shift_quantile, num_partners=num_partners)
  samples = sampler.sample(num, max_candidates)
  return samples, sampler.stats
