"""The GAN training state and its pure train step.

`GANState` holds everything needed to continue training (parameters,
BatchNorm statistics, optimizer states, the EMA of G, the step) as one pytree;
the modules, optimizers and loss choice are static fields. `train_step` is a
pure function of (state, batch, rng): jit it, scan it, pmap it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxgan import augment as augment_lib
from jaxgan import losses, optimizers, regularizers, rng

PyTree = Any


class GANState(struct.PyTreeNode):
  """Training state of a GAN. Saving this pytree is a complete checkpoint."""
  step: jax.Array
  g_params: PyTree
  d_params: PyTree
  g_batch_stats: PyTree
  d_batch_stats: PyTree
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState
  generator: nn.Module = struct.field(pytree_node=False)
  discriminator: nn.Module = struct.field(pytree_node=False)
  g_optimizer: optax.GradientTransformation = struct.field(pytree_node=False)
  d_optimizer: optax.GradientTransformation = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="non_saturating")
  latent_dim: int = struct.field(pytree_node=False, default=100)
  latent_distribution: str = struct.field(pytree_node=False, default="normal")
  data_shape: tuple[int, ...] = struct.field(pytree_node=False, default=(64, 64, 3))
  n_critic: int = struct.field(pytree_node=False, default=1)
  g_steps: int = struct.field(pytree_node=False, default=1)
  ema_decay: float | None = struct.field(pytree_node=False, default=None)
  g_ema_params: PyTree = None  # an EMA of g_params when ema_decay is set, else None
  # The EMA generator's own BatchNorm statistics (when G has BatchNorm and an EMA), else None.
  g_ema_batch_stats: PyTree = None
  ema_start: int = struct.field(pytree_node=False, default=0)
  gp_weight: float = struct.field(pytree_node=False, default=0.0)
  r1_gamma: float = struct.field(pytree_node=False, default=0.0)
  r1_interval: int = struct.field(pytree_node=False, default=1)
  weight_clip: float = struct.field(pytree_node=False, default=0.0)
  augment: tuple[str, ...] = struct.field(pytree_node=False, default=())
  pack: int = struct.field(pytree_node=False, default=1)
  num_classes: int = struct.field(pytree_node=False, default=0)
  label_smoothing: float = struct.field(pytree_node=False, default=0.0)
  generator_objective: str = struct.field(pytree_node=False, default="adversarial")
  g_historical_weight: float = struct.field(pytree_node=False, default=0.0)
  d_historical_weight: float = struct.field(pytree_node=False, default=0.0)
  # The mean of all past parameter values (historical averaging), else None.
  g_historical_params: PyTree = None
  d_historical_params: PyTree = None
  reuse_fake: bool = struct.field(pytree_node=False, default=False)
  simultaneous: bool = struct.field(pytree_node=False, default=False)
  generator_per_slot: bool = struct.field(pytree_node=False, default=False)


GENERATOR_OBJECTIVES = ("adversarial", "feature_matching")
# z ~ N(0, I) (pytorch/examples' DCGAN, most GAN code) or U(-1, 1) (Radford et al.'s DCGAN).
LATENT_DISTRIBUTIONS = ("normal", "uniform")


def check_latent_distribution(distribution: str) -> str:
  """`distribution` if it is one of LATENT_DISTRIBUTIONS, else a ValueError naming them."""
  if distribution not in LATENT_DISTRIBUTIONS:
    raise ValueError(f"unknown latent_distribution {distribution!r}; choose one of "
                     f"{', '.join(LATENT_DISTRIBUTIONS)}")
  return distribution


def pack_samples(x: jax.Array, pack: int) -> jax.Array:
  """PacGAN packing: [B, ..., C] -> [B / pack, ..., pack * C], consecutive samples joined
  along the last (channel/feature) axis, so D judges `pack` samples at once."""
  if pack == 1:
    return x
  b, *rest = x.shape
  x = x.reshape(b // pack, pack, *rest)
  return jnp.moveaxis(x, 1, -2).reshape(b // pack, *rest[:-1], pack * rest[-1])


def _label_kwargs(labels) -> dict:
  """The keyword arguments that pass `labels` to a class-conditional module (none if None)."""
  return {} if labels is None else {"labels": labels}


def module_classes(module: nn.Module) -> int | None:
  """The classes `module` is conditioned on: 0 when its call takes no `labels`, else its
  `num_classes` field (None when it has none)."""
  if "labels" not in inspect.signature(type(module).__call__).parameters:
    return 0
  return getattr(module, "num_classes", None)


def _init_variables(module: nn.Module, key: jax.Array, x: jax.Array, labels=None) -> PyTree:
  """`module.init` compiled once at XLA's lowest optimisation level.

  Op-by-op initialisation of a DCGAN takes ~20 s on CPU and a default-optimised
  compile ~6.5 s (the normal sampler's polynomial); at -O0 it compiles in ~2 s,
  and initialisation runs only once.
  """
  init = jax.jit(functools.partial(module.init, train=False, **_label_kwargs(labels)))
  if jax.devices()[0].platform != "cpu" or isinstance(key, jax.core.Tracer):
    return init(key, x)  # on accelerators, or traced (e.g. jax.eval_shape(create_state, ...))
  return init.lower(key, x).compile({"xla_backend_optimization_level": 0})(key, x)


def create_state(rng: jax.Array, *, generator: nn.Module, discriminator: nn.Module,
                 g_optimizer: optax.GradientTransformation,
                 d_optimizer: optax.GradientTransformation, latent_dim: int,
                 data_shape: Sequence[int], loss: str = "non_saturating", n_critic: int = 1,
                 g_steps: int = 1, latent_distribution: str = "normal",
                 ema_decay: float | None = None, ema_start: int = 0, gp_weight: float = 0.0,
                 r1_gamma: float = 0.0, r1_interval: int = 1, weight_clip: float = 0.0,
                 augment: str | Sequence[str] = (), pack: int = 1,
                 num_classes: int = 0, label_smoothing: float = 0.0,
                 generator_objective: str = "adversarial", g_historical_weight: float = 0.0,
                 d_historical_weight: float = 0.0, reuse_fake: bool = False,
                 simultaneous: bool = False, generator_per_slot: bool = False) -> GANState:
  """Initialises both networks and their optimizers.

  Args:
    rng: a PRNG key (typed `jax.random.key` or raw uint32).
    generator: module mapping z [B, latent_dim] to samples [B, *data_shape].
    discriminator: module mapping samples [B, *data_shape] to logits [B].
    latent_dim: size of z.
    latent_distribution: "normal" (z ~ N(0, I)) or "uniform" (z ~ U(-1, 1)^latent_dim,
      as Radford et al.'s DCGAN and PacGAN's Stacked MNIST code draw it); training,
      `sample` and evaluation draw z from it.
    loss: one of `jaxgan.losses.LOSSES`.
    n_critic: discriminator updates per generator update.
    g_steps: generator updates per step, all on the step's latents and against
      the same D, after D's updates; DCGAN-tensorflow (and PacGAN's Stacked
      MNIST code built on it) runs two, "to make sure that d_loss does not go to
      zero". EMA and historical averages are updated once per step.
    ema_decay: when set, `g_ema_params` tracks an exponential moving average of
      G's parameters, used by `sample` and evaluation. A G with BatchNorm also
      gets `g_ema_batch_stats`: each step runs the EMA parameters forward on that
      step's latents (one forward pass of G, no backward) to keep running
      statistics that belong to them. G's own statistics belong to G's current
      parameters; evaluating the average with them blurs the samples.
    ema_start: the EMA copies G's parameters until this step, then averages.
    gp_weight: weight of the WGAN-GP gradient penalty in D's loss (0 = off).
    r1_gamma: R1 penalty gamma / 2 * E||grad D(x_real)||^2 in D's loss (0 = off).
    r1_interval: apply R1 every this many steps, weighted by it (lazy R1).
    weight_clip: clip D's parameters to [-c, c] after each update (WGAN; 0 = off).
    augment: DiffAugment transforms ("color,translation,cutout") applied to
      everything D sees, in both updates.
    pack: PacGAN packing degree: D judges `pack` samples joined along channels.
    num_classes: > 0 trains a class-conditional GAN: both modules take
      `labels=` (e.g. `SNResNetGenerator/Discriminator(num_classes=...)`), batches
      carry integer `batch["label"]` [B] in [0, num_classes), and fake samples get
      uniformly drawn labels.
    label_smoothing: one-sided label smoothing: D's target for real samples is
      1 - label_smoothing (Salimans et al. 2016); see `jaxgan.losses`.
    generator_objective: "adversarial" (G minimises `loss`'s generator loss) or
      "feature_matching": G minimises ||mean f(x) - mean f(G(z))||^2, f being the
      features D sows as `intermediates/features` (Salimans et al. 2016).
    g_historical_weight, d_historical_weight: historical averaging (Salimans et
      al. 2016): + weight * ||theta - mean of past thetas||^2 in that network's
      loss; the running means live in the state (`g/d_historical_params`).
    reuse_fake: G's update reuses the latents (and labels) of the last D update
      and back-propagates through that update's forward pass of G, instead of
      drawing fresh ones and running G again; pytorch/examples' DCGAN does this.
      One forward pass of G less per step.
    simultaneous: simultaneous gradient descent: both networks step from one
      forward pass at the same parameters, G's gradient taken against D as it was
      before its update (implies `reuse_fake`; needs n_critic=1). The ALI code that
      PacGAN's 2-D experiments train with does this; the default alternates (G
      against the updated D), as Goodfellow et al.'s algorithm and most GAN code.
    generator_per_slot: with `pack` > 1, G runs once per pack slot (slot j: the j-th
      sample of every pack), so its BatchNorm statistics are taken over each slot's
      samples rather than over all of them, and its running statistics are updated
      once per slot, in slot order. PacGAN's Stacked MNIST code builds one G per slot
      this way; the default runs G once over all samples. No effect with pack=1.
  """
  losses.check_loss(loss)
  check_latent_distribution(latent_distribution)
  data_shape = tuple(int(d) for d in data_shape)
  if int(latent_dim) < 1:
    raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
  if int(n_critic) < 1:
    raise ValueError(f"n_critic must be >= 1, got {n_critic}")
  if int(g_steps) < 1:
    raise ValueError(f"g_steps must be >= 1, got {g_steps}")
  if simultaneous and int(n_critic) != 1:
    raise ValueError(f"simultaneous=True with n_critic={n_critic}: simultaneous updates step D "
                     "and G once each from one forward pass; use n_critic=1 or simultaneous=False")
  if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")
  augment = augment_lib.parse_policy(augment if isinstance(augment, str) else ",".join(augment))
  for name, value in (("gp_weight", gp_weight), ("r1_gamma", r1_gamma),
                      ("weight_clip", weight_clip), ("ema_start", ema_start),
                      ("g_historical_weight", g_historical_weight),
                      ("d_historical_weight", d_historical_weight)):
    if value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}")
  if int(r1_interval) < 1 or int(pack) < 1:
    raise ValueError(f"r1_interval and pack must be >= 1, got {r1_interval} and {pack}")
  num_classes = int(num_classes)
  if num_classes < 0:
    raise ValueError(f"num_classes must be >= 0, got {num_classes}")
  for name, module in (("generator", generator), ("discriminator", discriminator)):
    classes = module_classes(module)
    if (classes is not None and classes != num_classes) or (num_classes and classes == 0):
      kind = "unconditional" if not classes else f"conditioned on {classes} classes"
      raise ValueError(f"num_classes={num_classes} but the {name} {type(module).__name__} is "
                       f"{kind}; pass the same num_classes to both modules and create_state")
  label_smoothing = losses.check_label_smoothing(loss, label_smoothing)
  if generator_objective not in GENERATOR_OBJECTIVES:
    raise ValueError(f"unknown generator_objective {generator_objective!r}; choose one of "
                     f"{', '.join(GENERATOR_OBJECTIVES)}")
  if num_classes and int(pack) > 1:
    raise ValueError(f"pack={pack} with num_classes={num_classes}: PacGAN packing is not defined "
                     "for class-conditional discriminators; use pack=1")
  if augment and len(tuple(data_shape)) != 3:
    raise ValueError(f"DiffAugment needs image data [H, W, C], but data_shape is {tuple(data_shape)}")
  g_key, d_key = jax.random.split(rng)
  z = jnp.zeros((1, latent_dim), jnp.float32)
  x = pack_samples(jnp.zeros((int(pack), *data_shape), jnp.float32), int(pack))
  y = jnp.zeros((1,), jnp.int32) if num_classes else None
  g_out = jax.eval_shape(lambda: generator.init_with_output(g_key, z, train=False,
                                                            **_label_kwargs(y))[0])
  if tuple(g_out.shape[1:]) != data_shape:
    raise ValueError(f"the generator makes samples of shape {tuple(g_out.shape[1:])} but "
                     f"data_shape is {data_shape}; make the generator's output size and "
                     "channels match the data")
  g_vars = _init_variables(generator, g_key, z, y)
  d_vars = _init_variables(discriminator, d_key, x, y)
  g_params, d_params = g_vars["params"], d_vars["params"]
  if generator_objective == "feature_matching":
    _check_sows_features(discriminator, d_vars, x, y)
  copy = lambda tree, on: jax.tree.map(jnp.copy, tree) if on else None  # noqa: E731
  return GANState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params, d_params=d_params,
      g_batch_stats=g_vars.get("batch_stats", {}), d_batch_stats=d_vars.get("batch_stats", {}),
      g_opt_state=g_optimizer.init(g_params), d_opt_state=d_optimizer.init(d_params),
      generator=generator, discriminator=discriminator,
      g_optimizer=g_optimizer, d_optimizer=d_optimizer,
      loss=loss, latent_dim=int(latent_dim), latent_distribution=latent_distribution,
      data_shape=data_shape, n_critic=int(n_critic),
      g_steps=int(g_steps), ema_decay=ema_decay,
      g_ema_params=copy(g_params, ema_decay is not None),
      g_ema_batch_stats=copy(g_vars.get("batch_stats"),
                             ema_decay is not None and bool(g_vars.get("batch_stats"))),
      ema_start=int(ema_start), gp_weight=float(gp_weight), r1_gamma=float(r1_gamma),
      r1_interval=int(r1_interval), weight_clip=float(weight_clip), augment=augment,
      pack=int(pack), num_classes=num_classes, label_smoothing=label_smoothing,
      generator_objective=generator_objective, g_historical_weight=float(g_historical_weight),
      d_historical_weight=float(d_historical_weight),
      reuse_fake=bool(reuse_fake or simultaneous), simultaneous=bool(simultaneous),
      generator_per_slot=bool(generator_per_slot),
      g_historical_params=copy(g_params, g_historical_weight > 0),
      d_historical_params=copy(d_params, d_historical_weight > 0))


# create_state's training options, as the configs of `experiments/configs/` name them.
_CONFIG_OPTIONS = {"loss": "non_saturating", "n_critic": 1, "g_steps": 1,
                   "latent_distribution": "normal", "ema_start": 0,
                   "gp_weight": 0.0, "r1_gamma": 0.0, "r1_interval": 1, "weight_clip": 0.0,
                   "augment": "", "pack": 1, "label_smoothing": 0.0,
                   "generator_objective": "adversarial", "g_historical_weight": 0.0,
                   "d_historical_weight": 0.0, "reuse_fake": False, "simultaneous": False,
                   "generator_per_slot": False}


def options_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """The keyword options of `create_state` (loss, regularizers, EMA, packing, the
  Improved Techniques, reuse_fake, simultaneous, generator_per_slot) read from a config; a missing key takes
  create_state's default, and `ema_decay` 0 means no EMA. One place, so every
  program (CelebA, the 2-D mixtures, Stacked MNIST) offers the same switches."""
  options = {k: config.get(k, default) for k, default in _CONFIG_OPTIONS.items()}
  return {**options, "ema_decay": config.get("ema_decay", 0.0) or None}


def optimizers_from_config(config: Mapping[str, Any], num_steps: int | None = None,
                           n_critic: int | None = None, optimizer_key: str = "optimizer",
                           g_steps: int | None = None) -> dict[str, Any]:
  """create_state's `g_optimizer` and `d_optimizer`, read from a config: the optimizer under
  `optimizer_key` (default "adam"; or "rmsprop" with `rms_decay`), `g_lr`, `d_lr`, `b1`, `b2`
  and `lr_schedule` (default "constant"; see `jaxgan.optimizers`), decaying over `num_steps`,
  `n_critic` and `g_steps` (read from the config when not given; default 1)."""
  g, d = optimizers.optimizer_pair(
      config["g_lr"], config["d_lr"], config["b1"], config["b2"],
      name=optimizers.check_optimizer(config, optimizer_key),
      rms_decay=config.get("rms_decay", optimizers.RMSPROP_DECAY),
      schedule=optimizers.check_schedule(config),
      num_steps=int(config["num_steps"] if num_steps is None else num_steps),
      n_critic=int(config.get("n_critic", 1) if n_critic is None else n_critic),
      g_steps=int(config.get("g_steps", 1) if g_steps is None else g_steps))
  return {"g_optimizer": g, "d_optimizer": d}


def _features(module: nn.Module, variables, x, labels=None):
  """(logits, the features D sows as `intermediates/features`, or None) of D in training mode."""
  logits, out = module.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                             **_label_kwargs(labels))
  sown = out.get("intermediates", {}).get("features")
  return logits, (None if sown is None else sown[-1].reshape(x.shape[0], -1))


def _check_sows_features(discriminator: nn.Module, d_vars, x, y) -> None:
  _, features = jax.eval_shape(lambda: _features(discriminator, d_vars, x, y))
  if features is None:
    raise ValueError(f"generator_objective='feature_matching' needs a discriminator that sows "
                     f"its features (self.sow('intermediates', 'features', h)); "
                     f"{type(discriminator).__name__} does not")


def historical_penalty(params: PyTree, historical: PyTree) -> jax.Array:
  """||theta - mean of past thetas||^2 over all parameters (Salimans et al. 2016)."""
  return sum(jnp.sum(jnp.square(p - h)) for p, h in zip(jax.tree.leaves(params),
                                                          jax.tree.leaves(historical)))


def update_historical_mean(historical: PyTree, params: PyTree, step: jax.Array) -> PyTree:
  """The running mean of theta_0 .. theta_{step+1} from that of theta_0 .. theta_step."""
  return jax.tree.map(lambda h, p: h + (p - h) / (step + 2).astype(p.dtype), historical, params)


def _with_axis_name(module: nn.Module, axis_name: str | None) -> tuple[nn.Module, bool]:
  """Returns (module, synced): the module set to reduce BatchNorm statistics over `axis_name`."""
  if axis_name is None:
    return module, True
  if "axis_name" in {f.name for f in dataclasses.fields(module)}:
    return module.clone(axis_name=axis_name), True
  return module, False


def _apply(module: nn.Module, params, batch_stats, x, labels=None, train: bool = True):
  """Runs `module` in training mode; returns (output, updated batch_stats)."""
  out, new_vars = module.apply({"params": params, "batch_stats": batch_stats}, x, train=train,
                               mutable=["batch_stats"], **_label_kwargs(labels))
  return out, new_vars.get("batch_stats", batch_stats)


def _apply_per_slot(module: nn.Module, params, batch_stats, z, labels, slots: int):
  """`_apply` of G once per pack slot: slot j is rows j, j + slots, ... (the j-th sample of
  every pack, `pack_samples`' grouping), each run with its own BatchNorm batch statistics and
  the running statistics threaded through the runs in slot order. Rows come back in place."""
  if slots == 1:
    return _apply(module, params, batch_stats, z, labels)
  outs = []
  for j in range(slots):  # a Python loop: `slots` is the packing degree (2-4)
    out, batch_stats = _apply(module, params, batch_stats, z[j::slots],
                              None if labels is None else labels[j::slots])
    outs.append(out)
  return jnp.stack(outs, axis=1).reshape(z.shape[0], *outs[0].shape[1:]), batch_stats


def latent_sampler(distribution: str) -> Callable[[jax.Array, tuple[int, ...]], jax.Array]:
  """`sampler(key, shape)` -> float32 z of `shape` from `distribution` (LATENT_DISTRIBUTIONS)."""
  if check_latent_distribution(distribution) == "uniform":
    return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
  return lambda key, shape: jax.random.normal(key, shape, jnp.float32)


def latents(key: jax.Array, num: int, latent_dim: int, axis_name: str | None = None,
            distribution: str = "normal") -> jax.Array:
  """z of shape [num, latent_dim]: N(0, I), or U(-1, 1) with distribution="uniform".

  Under `axis_name` each device takes its slice of the noise for the whole
  global batch, so the noise does not depend on how the batch is split.
  """
  sampler = latent_sampler(distribution)
  return rng.draw(lambda k, n: sampler(k, (n, latent_dim)), key, num, axis_name)


def latents_for(state: GANState, key: jax.Array, num: int,
                axis_name: str | None = None) -> jax.Array:
  """`latents` of the size and distribution that `state`'s generator takes."""
  return latents(key, num, state.latent_dim, axis_name, state.latent_distribution)


def random_labels(key: jax.Array, num: int, num_classes: int,
                  axis_name: str | None = None) -> jax.Array | None:
  """Class labels of fake samples, uniform over [0, num_classes); None when unconditional.
  Under `axis_name` each device takes its slice of the global batch's labels."""
  if not num_classes:
    return None
  return rng.draw(lambda k, n: jax.random.randint(k, (n,), 0, num_classes), key, num, axis_name)


def _check_batch(state: GANState, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, Any]:
  if "image" not in batch:
    raise ValueError(f"the batch has no 'image' entry (keys: {sorted(batch)}); pass "
                     "{'image': x} with x of shape [B, *data_shape]")
  real = batch["image"]
  if tuple(real.shape[1:]) != state.data_shape:
    raise ValueError(f"batch['image'] has shape {tuple(real.shape)} but the state expects "
                     f"[B, *{state.data_shape}]")
  if real.shape[0] % state.n_critic:
    raise ValueError(f"batch size {real.shape[0]} is not divisible by n_critic={state.n_critic}: "
                     "each step feeds n_critic discriminator updates from one batch")
  if (real.shape[0] // state.n_critic) % state.pack:
    raise ValueError(f"batch size {real.shape[0]} / n_critic={state.n_critic} is not divisible by "
                     f"pack={state.pack}: D judges packs of {state.pack} samples")
  if not state.num_classes:
    return real, None
  labels = batch.get("label")
  if labels is None or labels.shape != real.shape[:1] or not jnp.issubdtype(labels.dtype,
                                                                            jnp.integer):
    raise ValueError(
        f"the GAN is class-conditional (num_classes={state.num_classes}) but batch['label'] is "
        f"{'missing' if labels is None else f'{labels.dtype}{tuple(labels.shape)}'}; pass integer "
        f"labels of shape [{real.shape[0]}] with values in [0, {state.num_classes})")
  return real, labels


def _mean_metrics(per_update: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
  """The mean of each metric over a step's updates of one network (exact for one update)."""
  return jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)), *per_update)


def train_step(state: GANState, batch: Mapping[str, jax.Array], rng: jax.Array, *,
               axis_name: str | None = None) -> tuple[GANState, dict[str, jax.Array]]:
  """One GAN iteration: `n_critic` discriminator updates, then `g_steps` generator updates.

  The batch's B real samples are split into `n_critic` equal strided chunks
  (update i takes rows i, i + n_critic, ...); G's update uses B / n_critic
  fresh latents (or, with `reuse_fake`, the last D update's latents and its
  forward pass of G); with `g_steps` > 1 every G update uses those latents,
  against the same D. With `simultaneous`, G's gradient is taken against D's
  parameters and statistics from before D's update. D trains on G(z) under
  `stop_gradient`. Each network's BatchNorm statistics change only in its own
  update (G runs in training mode inside D's update and vice versa, but those
  passes' statistics are discarded). Keys come from `fold_in(rng, state.step)`.

  With `axis_name` (inside pmap/shard_map) gradients, BatchNorm statistics and
  metrics are averaged over that axis, and the step computes what the
  single-device step computes on the concatenated global batch.

  Returns the new state and metrics: d_loss, g_loss, d_real / d_fake (mean
  D(x) and D(G(z)) probabilities in D's update), g_grad_norm, d_grad_norm.
  """
  real, real_labels = _check_batch(state, batch)
  real = real.astype(jnp.float32)
  generator, g_synced = _with_axis_name(state.generator, axis_name)
  discriminator, d_synced = _with_axis_name(state.discriminator, axis_name)

  def sync(tree, synced=False):
    return tree if axis_name is None or synced else jax.lax.pmean(tree, axis_name)

  key = jax.random.fold_in(rng, state.step)
  d_key, g_key = jax.random.split(key)
  per_update = real.shape[0] // state.n_critic
  # D update i takes rows i, i + n_critic, i + 2 n_critic, ...: strided chunks, so that any
  # contiguous split of the batch over devices or processes gives the same global chunks.
  reals = real.reshape(per_update, state.n_critic, *state.data_shape)
  chunk_labels = (None if real_labels is None else real_labels.reshape(per_update, state.n_critic))

  extra_key = jax.random.fold_in(key, 7)  # augmentation and penalties; z keys stay as they were
  label_key = jax.random.fold_in(key, 11)  # labels of fake samples (class-conditional GANs)

  def d_input(x, k):
    """What D sees of samples x: DiffAugment-ed (if on), then packed (if on)."""
    if state.augment:
      x = augment_lib.diff_augment(x, k, state.augment, axis_name)
    return pack_samples(x, state.pack)

  apply_r1 = state.r1_gamma > 0 and (state.step % state.r1_interval == 0)

  def fake_inputs(i):
    """The latents and labels of D update i."""
    z = latents_for(state, jax.random.fold_in(d_key, i), per_update, axis_name)
    return z, random_labels(jax.random.fold_in(label_key, i), per_update, state.num_classes,
                            axis_name)

  g_slots = state.pack if state.generator_per_slot else 1

  def run_generator(params, batch_stats, z, y_fake):
    """G(z) in training mode (once per pack slot with `generator_per_slot`), new statistics."""
    return _apply_per_slot(generator, params, batch_stats, z, y_fake, g_slots)

  def generator_forward(params, z, y_fake):
    return run_generator(params, state.g_batch_stats, z, y_fake)

  def d_update(carry, x, y, i, fake_and_labels=None):
    d_params, d_batch_stats, d_opt_state = carry
    k_real, k_fake, k_gp = jax.random.split(jax.random.fold_in(extra_key, i), 3)
    if fake_and_labels is None:
      z, y_fake = fake_inputs(i)
      fake, _ = generator_forward(state.g_params, z, y_fake)
    else:
      fake, y_fake = fake_and_labels
    fake = jax.lax.stop_gradient(fake)
    x, fake = d_input(x, k_real), d_input(fake, k_fake)

    def loss_fn(params):
      real_logits, stats = _apply(discriminator, params, d_batch_stats, x, y)
      fake_logits, stats = _apply(discriminator, params, stats, fake, y_fake)
      loss = losses.discriminator_loss(state.loss, real_logits, fake_logits,
                                       label_smoothing=state.label_smoothing)
      if state.d_historical_params is not None:
        loss += state.d_historical_weight * historical_penalty(params, state.d_historical_params)
      # Penalties are taken at real (or interpolated) samples, with the real labels.
      d_fn = lambda v: _apply(discriminator, params, d_batch_stats, v, y)[0]  # noqa: E731
      if state.gp_weight > 0:  # the penalty's own BatchNorm statistics are discarded
        loss += state.gp_weight * regularizers.gradient_penalty(d_fn, x, fake, k_gp, axis_name)
      if state.r1_gamma > 0:  # lazy: every r1_interval steps, weighted by the interval
        loss += 0.5 * state.r1_gamma * state.r1_interval * jax.lax.cond(
            apply_r1, lambda: regularizers.r1_penalty(d_fn, x), lambda: jnp.zeros(()))
      return loss, (stats, real_logits, fake_logits)

    (loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(d_params)
    grads = sync(grads)
    updates, d_opt_state = state.d_optimizer.update(grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, updates)
    if state.weight_clip > 0:
      d_params = regularizers.clip_weights(d_params, state.weight_clip)
    metrics = {"d_loss": loss, "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
               "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
               "d_grad_norm": optax.tree.norm(grads)}
    return (d_params, sync(stats, d_synced), d_opt_state), metrics

  # A Python loop, not lax.scan: XLA:CPU runs convolutions inside a while loop
  # an order of magnitude slower, and n_critic is small.
  carry, d_metrics = (state.d_params, state.d_batch_stats, state.d_opt_state), []
  for i in range(state.n_critic):
    y = None if chunk_labels is None else chunk_labels[:, i]
    shared = None
    if state.reuse_fake and i == state.n_critic - 1:  # this forward pass of G serves both
      z, y_fake = fake_inputs(i)
      fake, g_vjp, reused_g_stats = jax.vjp(lambda p: generator_forward(p, z, y_fake),
                                            state.g_params, has_aux=True)
      shared = (fake, y_fake)
    carry, metrics = d_update(carry, reals[:, i], y, i, shared)
    d_metrics.append(metrics)
  d_params, d_batch_stats, d_opt_state = carry
  d_metrics = _mean_metrics(d_metrics)

  g_aug_key = jax.random.fold_in(extra_key, state.n_critic)
  if not state.reuse_fake:
    z = latents_for(state, g_key, per_update, axis_name)
    y_fake = random_labels(jax.random.fold_in(label_key, state.n_critic), per_update,
                           state.num_classes, axis_name)

  # The D that G's update is taken against: D after its update (alternating), or D as it
  # was before it (simultaneous gradient descent: both gradients at the same parameters).
  g_d_params, g_d_stats = ((state.d_params, state.d_batch_stats) if state.simultaneous
                           else (d_params, d_batch_stats))
  d_vars = {"params": g_d_params, "batch_stats": g_d_stats}
  if state.generator_objective == "feature_matching":
    # mean f(x) over the global batch of real samples, with the D that G steps against
    _, real_features = _features(discriminator, d_vars,
                                 d_input(real, jax.random.fold_in(g_aug_key, 1)), real_labels)
    real_mean = sync(jnp.mean(jax.lax.stop_gradient(real_features), axis=0))

  def g_objective(fake):
    """(the objective whose gradient G follows, G's loss) of the samples G made."""
    if state.generator_objective == "feature_matching":
      _, fake_features = _features(discriminator, d_vars, d_input(fake, g_aug_key), y_fake)
      local_mean = jnp.mean(fake_features, axis=0)
      diff = sync(jax.lax.stop_gradient(local_mean)) - real_mean  # global mean f(G(z)) - f(x)
      loss = jnp.sum(jnp.square(diff))
      # 2 diff . local_mean has the gradient of ||diff||^2 through this device's samples;
      # the pmean of gradients below completes it, with no collective inside the gradient.
      objective = 2.0 * jnp.sum(diff * local_mean)
    else:
      fake_logits, _ = _apply(discriminator, g_d_params, g_d_stats, d_input(fake, g_aug_key),
                              y_fake)
      loss = objective = losses.generator_loss(state.loss, fake_logits)
    return objective, loss

  def g_penalty(params):
    if state.g_historical_params is None:
      return jnp.zeros(())
    return state.g_historical_weight * historical_penalty(params, state.g_historical_params)

  def g_loss_fn(params, batch_stats):
    fake, stats = run_generator(params, batch_stats, z, y_fake)
    objective, loss = g_objective(fake)
    penalty = g_penalty(params)
    return objective + penalty, (loss + penalty, stats)

  g_params, g_batch_stats, g_opt_state = state.g_params, state.g_batch_stats, state.g_opt_state
  g_metrics = []
  for j in range(state.g_steps):  # a Python loop, as D's updates above
    if state.reuse_fake and j == 0:  # back-propagate through the D update's forward pass of G
      (_, g_loss), d_fake = jax.value_and_grad(g_objective, has_aux=True)(fake)
      g_grads, = g_vjp(d_fake)
      g_batch_stats = reused_g_stats
      if state.g_historical_params is not None:
        penalty, penalty_grads = jax.value_and_grad(g_penalty)(g_params)
        g_loss, g_grads = g_loss + penalty, jax.tree.map(jnp.add, g_grads, penalty_grads)
    else:
      (_, (g_loss, g_batch_stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
          g_params, g_batch_stats)
    g_grads = sync(g_grads)
    updates, g_opt_state = state.g_optimizer.update(g_grads, g_opt_state, g_params)
    g_params = optax.apply_updates(g_params, updates)
    g_metrics.append({"g_loss": g_loss, "g_grad_norm": optax.tree.norm(g_grads)})
  g_metrics = _mean_metrics(g_metrics)
  g_ema_params = state.g_ema_params
  if g_ema_params is not None:  # a copy of G until ema_start, an average from then on
    decay = jnp.where(state.step < state.ema_start, 0.0, state.ema_decay)
    g_ema_params = optax.incremental_update(g_params, g_ema_params, 1.0 - decay)
  g_ema_batch_stats = state.g_ema_batch_stats
  if g_ema_batch_stats is not None:  # the EMA parameters' own statistics, on G's latents
    _, g_ema_batch_stats = run_generator(g_ema_params, g_ema_batch_stats, z, y_fake)
    g_ema_batch_stats = sync(g_ema_batch_stats, g_synced)

  g_hist, d_hist = state.g_historical_params, state.d_historical_params
  if g_hist is not None:
    g_hist = update_historical_mean(g_hist, g_params, state.step)
  if d_hist is not None:
    d_hist = update_historical_mean(d_hist, d_params, state.step)

  metrics = sync({**d_metrics, **g_metrics})
  new_state = state.replace(
      step=state.step + 1, g_params=g_params, d_params=d_params,
      g_batch_stats=sync(g_batch_stats, g_synced), d_batch_stats=d_batch_stats,
      g_opt_state=g_opt_state, d_opt_state=d_opt_state, g_ema_params=g_ema_params,
      g_ema_batch_stats=g_ema_batch_stats, g_historical_params=g_hist, d_historical_params=d_hist)
  return new_state, metrics


def guard_nonfinite(step_fn=train_step, *, skip: bool = False):
  """Wraps a train step to detect divergence: metrics["nonfinite"] is 1.0 when a loss,
  a gradient norm or a new parameter is NaN or infinite, else 0.0.

  With `skip=True` such an update is dropped: the state keeps its previous
  values and only its step advances (the next step draws new keys and data).
  """

  def guarded(state: GANState, batch, rng, *, axis_name=None):
    new, metrics = step_fn(state, batch, rng, axis_name=axis_name)
    finite = [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]
    finite += [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves((new.g_params, new.d_params))]
    ok = jnp.all(jnp.stack(finite))
    if skip:
      new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state).replace(step=new.step)
    return new, {**metrics, "nonfinite": 1.0 - ok.astype(jnp.float32)}

  return guarded


def generator_variables(g_params, g_batch_stats, g_ema_params=None, g_ema_batch_stats=None, *,
                        use_ema: bool = True) -> dict:
  """G's variables for inference: the EMA parameters with the EMA's own BatchNorm statistics
  when an EMA is kept (and `use_ema`), else G's parameters and statistics. Missing
  statistics (None, or an older checkpoint without the EMA's) fall back to G's, then to {}."""
  if use_ema and g_ema_params:
    return {"params": g_ema_params, "batch_stats": g_ema_batch_stats or g_batch_stats or {}}
  return {"params": g_params, "batch_stats": g_batch_stats or {}}


def generate(state: GANState, z: jax.Array, use_ema: bool = True,
             labels: jax.Array | None = None) -> jax.Array:
  """G(z) in inference mode (BatchNorm running statistics), EMA parameters when present
  (and `use_ema`), with the EMA's own BatchNorm statistics.

  A class-conditional G makes class `labels[i]` from z[i]; without `labels` it
  makes classes 0, 1, ..., num_classes - 1 in turn (balanced, as evaluation
  and sample grids want).
  """
  variables = generator_variables(state.g_params, state.g_batch_stats, state.g_ema_params,
                                  state.g_ema_batch_stats, use_ema=use_ema)
  if state.num_classes and labels is None:
    labels = jnp.arange(z.shape[0]) % state.num_classes
  elif not state.num_classes and labels is not None:
    raise ValueError("labels were given but the GAN is unconditional (num_classes=0)")
  return state.generator.apply(variables, z, train=False, **_label_kwargs(labels))


@jax.jit
def _generate(state: GANState, z: jax.Array, labels: jax.Array | None) -> jax.Array:
  return generate(state, z, labels=labels)


def sample(state: GANState, rng: jax.Array, num: int,
           labels: jax.Array | None = None) -> jax.Array:
  """`num` samples from G (inference mode, EMA parameters when present), shape [num, *data_shape].
  For a class-conditional G, `labels` [num] picks the classes (default: 0, 1, ... in turn)."""
  return _generate(state, latents_for(state, rng, int(num)), labels)
