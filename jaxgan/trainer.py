"""The training program behind `python -m experiments.celeba`: config -> a trained, checkpointed GAN.

`train(config, workdir)` validates the config, builds the input pipeline and
the state, resumes from the newest checkpoint in `workdir/checkpoints` if
there is one, and trains to `config.num_steps`, leaving in `workdir`:
`checkpoints/<step>/`, `samples/step_<step>.png` (8x8 grids of one fixed noise
batch), `metrics.jsonl`, `tensorboard/` and `config.json`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import pathlib
import signal
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgan import augment as augment_lib
from jaxgan import (evaluation, input_pipeline, losses, models, optimizers, parallel, sampling,
                    summary)
from jaxgan.checkpointing import Checkpointer, WorkdirLock, refuse_changed_settings
from jaxgan.errors import ConfigError, DivergedError, check_choice
from jaxgan.models.layers import CONV_IMPLS, UPSAMPLE_IMPLS
from jaxgan.models.minibatch import MINIBATCH_KINDS
from jaxgan.train import (GENERATOR_OBJECTIVES, LATENT_DISTRIBUTIONS, GANState, create_state,
                          generate, generator_variables, guard_nonfinite, latents,
                          optimizers_from_config, options_from_config)

log = logging.getLogger(__name__)

MODELS = ("dcgan", "sn_resnet")
NUM_SAMPLES = 64  # an 8x8 grid


class _OwnInfoOnly(logging.Filter):
  """Passes warnings from everywhere but INFO records only from jaxgan and the entry points."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or record.name.startswith(("jaxgan", "__main__"))
            or ("/jaxgan/" in record.pathname or "/experiments/" in record.pathname))


def quiet_library_logs() -> None:
  """Hides the INFO chatter of orbax, tfds and absl-logging libraries on the root handlers."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(_OwnInfoOnly())


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line naming the key and the fix) for any bad value."""
  for key in ("seed", "batch_size", "num_steps", "n_critic", "latent_dim", "log_every",
              "sample_every", "checkpoint_every", "keep_checkpoints", "model.image_size",
              "model.channels", "model.ngf", "model.ndf", "data.num_examples",
              "data.num_workers", "data.prefetch"):
    value = config
    for part in key.split("."):
      value = value[part]
    _check(_is_int(value), f"config.{key} must be an integer, got {value!r}")
    _check(key == "seed" or value >= (0 if key == "num_steps" else 1),
           f"config.{key} must be >= {0 if key == 'num_steps' else 1}, got {value}")
  _check(config.loss in losses.LOSSES,
         f"config.loss={config.loss!r} is unknown; choose one of {', '.join(losses.LOSSES)}")
  check_choice(config, "latent_distribution", LATENT_DISTRIBUTIONS, "normal")
  _check(config.batch_size % config.n_critic == 0,
         f"config.batch_size={config.batch_size} must be divisible by "
         f"config.n_critic={config.n_critic} (each D update takes batch_size/n_critic images)")
  _check(0.0 <= config.ema_decay < 1.0, f"config.ema_decay must be in [0, 1), got {config.ema_decay}")
  for key in ("ema_start", "gp_weight", "r1_gamma", "weight_clip", "g_historical_weight",
              "d_historical_weight"):
    _check(config.get(key, 0) >= 0, f"config.{key} must be >= 0, got {config.get(key)}")
  for key in ("r1_interval", "pack", "g_steps"):
    _check(_is_int(config.get(key, 1)) and config.get(key, 1) >= 1,
           f"config.{key} must be an integer >= 1, got {config.get(key)!r}")
  try:
    augment_lib.parse_policy(config.get("augment", ""))
  except ValueError as e:
    raise ConfigError(f"config.augment: {e}") from None
  try:
    losses.check_label_smoothing(config.loss, config.get("label_smoothing", 0.0))
  except ValueError as e:
    raise ConfigError(f"config.label_smoothing: {e}") from None
  _check(config.get("generator_objective", "adversarial") in GENERATOR_OBJECTIVES,
         f"config.generator_objective={config.get('generator_objective')!r} is unknown; choose "
         f"one of {', '.join(GENERATOR_OBJECTIVES)}")
  m = config.model
  _check(m.name in MODELS, f"config.model.name={m.name!r} is unknown; choose one of {MODELS}")
  size = m.image_size
  _check(size >= 8 and size & (size - 1) == 0,
         f"config.model.image_size must be a power of two >= 8 (e.g. 32, 64), got {size}")
  _check(m.name != "sn_resnet" or size in models.resnet.RESOLUTIONS,
         f"config.model.image_size={size}: sn_resnet is defined for "
         f"{' and '.join(map(str, models.resnet.RESOLUTIONS))} pixels")
  _check(m.channels in (1, 3), f"config.model.channels must be 1 or 3, got {m.channels}")
  _check(m.upsample in UPSAMPLE_IMPLS,
         f"config.model.upsample={m.upsample!r} is unknown; choose one of {UPSAMPLE_IMPLS}")
  _check(m.get("conv_impl", "auto") in CONV_IMPLS,
         f"config.model.conv_impl={m.get('conv_impl')!r} is unknown; choose one of {CONV_IMPLS}")
  _check(m.get("dtype", "float32") in COMPUTE_DTYPES,
         f"config.model.dtype={m.get('dtype')!r} is unknown; choose one of "
         f"{', '.join(COMPUTE_DTYPES)} (the compute dtype; parameters stay float32)")
  _check(isinstance(config.get("reuse_fake", False), bool),
         f"config.reuse_fake must be true or false, got {config.get('reuse_fake')!r}")
  _check(m.get("minibatch", "none") in MINIBATCH_KINDS,
         f"config.model.minibatch={m.get('minibatch')!r} is unknown; choose one of "
         f"{', '.join(MINIBATCH_KINDS)}")
  _check(isinstance(m.get("spectral_norm", False), bool),
         f"config.model.spectral_norm must be true or false, got {m.get('spectral_norm')!r}")
  o = config.optimizer
  optimizers.check_optimizer(o, "optimizer.name")
  schedule = optimizers.check_schedule(o, "optimizer.lr_schedule")
  _check(not optimizers.decays(schedule) or config.num_steps >= 1,
         f"config.optimizer.lr_schedule={schedule!r} decays over the run; set config.num_steps >= 1")
  for k in ("g_lr", "d_lr"):
    _check(o[k] > 0, f"config.optimizer.{k} must be > 0, got {o[k]}")
  for k in ("b1", "b2"):
    _check(0 <= o[k] < 1, f"config.optimizer.{k} must be in [0, 1), got {o[k]}")
  d = config.data
  _check(d.source in input_pipeline.SOURCES,
         f"config.data.source={d.source!r} is unknown; choose one of "
         f"{', '.join(input_pipeline.SOURCES)}")
  _check(d.crop in input_pipeline.CROPS,
         f"config.data.crop={d.crop!r} is unknown; choose one of {', '.join(input_pipeline.CROPS)}")
  _check(d.source not in ("folder", "npz") or bool(d.path),
         f"config.data.source={d.source} needs config.data.path (a folder, .zip or .npz)")
  _check(0 <= d.max_bad_fraction <= 1,
         f"config.data.max_bad_fraction must be in [0, 1], got {d.max_bad_fraction}")
  _check(config.nonfinite in ("stop", "skip"),
         f"config.nonfinite={config.nonfinite!r} is unknown; choose stop or skip")
  _check(config.parallel in parallel.KINDS,
         f"config.parallel={config.parallel!r} is unknown; choose one of {', '.join(parallel.KINDS)}")
  _check(config.multihost in ("auto", "on", "off"),
         f"config.multihost={config.multihost!r} is unknown; choose auto, on or off")
  eval_every = config.get("eval_every", 0)
  _check(_is_int(eval_every) and eval_every >= 0,
         f"config.eval_every must be an integer >= 0 (0 = never), got {eval_every!r}")
  if eval_every:
    evaluation.validate_config(config.eval)
  try:
    parallel.check_batch_size(config.batch_size, config.parallel, config.n_critic,
                              config.get("pack", 1))
  except ValueError as e:
    hint = (" (or set config.parallel=none)"
            if config.parallel != "none" and jax.device_count() > 1 else "")
    raise ConfigError(f"config.batch_size: {e}{hint}") from None


# Compute dtypes of config.model.dtype. Parameters, optimizer states and losses stay float32.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def make_generator(config: ml_collections.ConfigDict) -> nn.Module:
  """G of `config.model`: DCGAN (widths from ngf) or SN-ResNet (ngf is its `ch`)."""
  m = config.model
  dtype = COMPUTE_DTYPES[m.get("dtype", "float32")]
  if m.name == "sn_resnet":
    return models.SNResNetGenerator(image_size=m.image_size, channels=m.channels, ch=m.ngf,
                                    dtype=dtype)
  return models.DCGANGenerator(image_size=m.image_size, channels=m.channels, ngf=m.ngf,
                               upsample=m.upsample, conv_impl=m.get("conv_impl", "auto"),
                               dtype=dtype)


def make_discriminator(config: ml_collections.ConfigDict) -> nn.Module:
  """D of `config.model`: DCGAN (optionally spectral-normalised) or SN-ResNet (ndf is its `ch`)."""
  m = config.model
  dtype = COMPUTE_DTYPES[m.get("dtype", "float32")]
  if m.name == "sn_resnet":
    return models.SNResNetDiscriminator(image_size=m.image_size, ch=m.ndf,
                                        minibatch=m.get("minibatch", "none"), dtype=dtype)
  return models.DCGANDiscriminator(image_size=m.image_size, channels=m.channels, ndf=m.ndf,
                                   spectral_norm=bool(m.get("spectral_norm", False)),
                                   minibatch=m.get("minibatch", "none"),
                                   conv_impl=m.get("conv_impl", "auto"), dtype=dtype)


def create_state_from_config(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
  size, ch = config.model.image_size, config.model.channels
  o = config.optimizer
  return create_state(
      rng,
      generator=make_generator(config),
      discriminator=make_discriminator(config),
      **optimizers_from_config(o, num_steps=config.num_steps, n_critic=config.get("n_critic", 1),
                               g_steps=config.get("g_steps", 1), optimizer_key="name"),
      latent_dim=config.latent_dim, data_shape=(size, size, ch), **options_from_config(config))


def make_pipeline(config: ml_collections.ConfigDict) -> input_pipeline.ImagePipeline:
  source = input_pipeline.make_source(config.data, config.model.image_size, config.model.channels,
                                      config.seed)
  d = config.data
  return input_pipeline.ImagePipeline(
      source, global_batch_size=config.batch_size, image_size=config.model.image_size,
      channels=config.model.channels, crop=d.crop, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=d.num_workers, prefetch=d.prefetch, max_bad_fraction=d.max_bad_fraction,
      cache_dir=d.cache_dir or None)


def sample_noise(config: ml_collections.ConfigDict, num: int = NUM_SAMPLES) -> jax.Array:
  """The fixed noise batch of a run's sample grids (depends on the seed only)."""
  return latents(jax.random.fold_in(jax.random.key(config.seed), 1), num, config.latent_dim,
                 distribution=config.get("latent_distribution", "normal"))


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


_COMPUTE_KEYS = ("upsample", "conv_impl", "dtype")
_COMPATIBLE_KEYS = ("model", "latent_dim", "latent_distribution", "loss", "n_critic", "g_steps",
                    "ema_decay", "pack", "g_historical_weight", "d_historical_weight")
# Of those, the keys added since runs were first saved, with the value such runs trained with.
_ADDED_KEYS = {"g_steps": 1, "pack": 1, "g_historical_weight": 0.0, "d_historical_weight": 0.0,
               "latent_distribution": "normal"}


class _StopSignals:
  """SIGTERM/SIGINT (preemption, Ctrl-C) only set a flag: the loop finishes its step,
  checkpoints and returns. A second SIGINT interrupts at once."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


def _check_compatible(saved: dict, config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """Refuses to resume a CelebA run whose checkpoint `config` cannot continue: another model,
  loss, optimizer or decay (`_COMPATIBLE_KEYS`, `lr_schedule`); the other keys, e.g. num_steps
  at a constant rate, evaluation, how layers compute, may change on resume."""
  current = json.loads(config.to_json())
  for c in (saved, current):  # how layers compute (not what they are) may change on resume
    if isinstance(c.get("model"), dict):
      c["model"] = {k: v for k, v in c["model"].items() if k not in _COMPUTE_KEYS}
  if isinstance(saved.get("model"), dict):  # model keys added since that run have their defaults
    current["model"] = {k: v for k, v in current["model"].items() if k in saved["model"]}
  saved_schedule = (saved.get("optimizer") or {}).get("lr_schedule", optimizers.DEFAULT_SCHEDULE)
  schedule = optimizers.check_schedule(config.optimizer)
  if saved and (saved_schedule != schedule or
                (optimizers.decays(schedule) and saved.get("num_steps") != current["num_steps"])):
    raise ConfigError(f"{workdir} holds a run with config.optimizer.lr_schedule={saved_schedule!r} "
                      f"over config.num_steps={saved.get('num_steps')}, not {schedule!r} over "
                      f"{current['num_steps']}; a decaying learning rate needs both unchanged "
                      "(resume with the same settings or use a new --workdir)")
  saved_name = (saved.get("optimizer") or {}).get("name", optimizers.DEFAULT_OPTIMIZER)
  name = optimizers.check_optimizer(config.optimizer, "optimizer.name")
  if saved:  # empty when the newest checkpoint's meta was damaged: restore() falls back
    # The checkpoint holds its optimizer's state, read as the optimizer it was saved with.
    refuse_changed_settings({**saved, "optimizer.name": saved_name},
                            {**current, "optimizer.name": name},
                            ("optimizer.name", *_COMPATIBLE_KEYS), workdir, _ADDED_KEYS)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
  """Trains (or resumes training) to `config.num_steps`; returns the last logged metrics."""
  validate_config(config)
  if config.get("compilation_cache_dir"):  # compiled steps are reused by later runs
    jax.config.update("jax_compilation_cache_dir",
                      str(pathlib.Path(config.compilation_cache_dir).expanduser()))
  workdir = pathlib.Path(workdir).expanduser().resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  # One run per workdir; process 0 of a multi-process run holds the lock for all.
  with WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, float]:
  is_main = jax.process_index() == 0
  # Built first, so missing weights or reference data fail now, not hours into training.
  evaluator = evaluation.Evaluator(config) if config.get("eval_every", 0) else None
  pipeline = make_pipeline(config)
  log.info("data: %d images, %d steps per epoch of %d", len(pipeline.source),
           pipeline.steps_per_epoch, config.batch_size)

  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  step_fn = parallel.data_parallel_step(
      config.parallel, guard_nonfinite(skip=config.nonfinite == "skip"))
  log.info("training on %d device(s) (parallel=%s), %d process(es)", step_fn.num_devices,
           config.parallel, jax.process_count())
  state = step_fn.replicate(create_state_from_config(config, init_key))
  checkpointer = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
  start, data_position = 0, 0
  if checkpointer.all_steps():
    try:
      saved_config = checkpointer.restore_meta().get("config", {})
    except Exception:  # noqa: BLE001 - a damaged newest checkpoint; restore() falls back
      saved_config = {}
    _check_compatible(saved_config, config, workdir)
    restored = checkpointer.restore(state)
    if restored is None:
      raise ConfigError(f"no checkpoint in {checkpointer.directory} could be restored (see the "
                        "warnings above); move them away or use a new --workdir")
    state, meta = restored
    start, data_position = int(state.step), int(meta.get("data_position", state.step))
    log.info("resumed from step %d", start)
  writer = summary.MetricWriter(workdir, enabled=is_main)
  writer.truncate_after(start)
  if is_main:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    (workdir / "samples").mkdir(exist_ok=True)

  generate_fn = jax.jit(generate)
  z_fixed = sample_noise(config)
  config_json = json.loads(config.to_json_best_effort())

  def save_samples(step: int):
    grid = summary.image_grid(np.asarray(generate_fn(state, z_fixed)), columns=8)
    if is_main:
      summary.save_png(workdir / "samples" / f"step_{step:08d}.png", grid)
      writer.image(step, "samples", grid)

  def save_checkpoint(step: int):
    checkpointer.save(step, state, {"data_position": data_position, "config": config_json})

  best_checkpointer = Checkpointer(workdir / "best", keep=1) if evaluator else None
  generate_eval = (jax.jit(functools.partial(generate, use_ema=config.eval.ema))
                   if evaluator else None)

  def run_eval(step: int):
    """eval/<step>.json, TensorBoard scalars, and best/ when the primary metric improved."""
    ema = bool(config.eval.ema and state.g_ema_params is not None)
    result = evaluator(lambda z: generate_eval(state, z), step, ema=ema)
    key = evaluation.primary_metric(evaluator.network)
    best_file = workdir / "eval" / "best.json"
    best = json.loads(best_file.read_text()) if best_file.exists() else None
    value = result["metrics"].get(key)
    improved = value is not None and (best is None or best.get("metric") != key
                                      or value < best["value"])
    if improved:
      best_checkpointer.save(step, state, {"data_position": data_position, "config": config_json,
                                           "metric": key, "value": value})
    if is_main:
      evaluation.write_result(workdir, result)
      writer.scalars(step, {f"eval/{k}": v for k, v in result["metrics"].items()}, jsonl=False)
      log.info("%s (%.0fs)%s", evaluation.summary_line(result), result["seconds"],
               f"; new best {key}, saved in {workdir / 'best'}" if improved else "")
      if improved:
        best_file.write_text(json.dumps({"step": step, "metric": key, "value": value}) + "\n")

  unchecked: list[jax.Array] = []  # nonfinite flags of the steps not checked yet

  def check_finite(step: int) -> None:
    """With nonfinite=stop: raises DivergedError if a step since the last check diverged."""
    flags = np.asarray(jax.device_get(unchecked))
    first = step - len(flags) + 1 + int(np.argmax(flags > 0)) if flags.any() else None
    unchecked.clear()
    if first is not None and config.nonfinite == "skip":
      log.warning("dropped %d non-finite update(s) in steps %d-%d", int(flags.sum()), first, step)
    if first is not None and config.nonfinite == "stop":
      saved = [s for s in checkpointer.all_steps() if s < first]
      good = (f"the last good checkpoint is step {saved[-1]} in {checkpointer.directory}"
              if saved else "no checkpoint was saved before it")
      raise DivergedError(f"training diverged: a non-finite loss, gradient or parameter at step "
                          f"{first}; {good}. Lower the learning rates, or set "
                          "config.nonfinite=skip to drop such updates")

  last: dict[str, float] = {}
  if start >= config.num_steps:
    log.info("already trained to step %d (num_steps=%d): nothing to do", start, config.num_steps)
  batches = input_pipeline.prefetch_to_device(
      pipeline.iterate(data_position),
      put=lambda b: step_fn.shard_batch(b, config.n_critic))
  pending: list[dict[str, jax.Array]] = []
  t_last, step_last = time.perf_counter(), start
  try:
    with _StopSignals() as stop:
      for step in range(start + 1, config.num_steps + 1):
        batch = next(batches)
        state, metrics = step_fn.sharded(state, batch, train_key)
        data_position += 1
        pending.append(metrics)
        unchecked.append(metrics["nonfinite"])
        if step == start + 1:  # time steady-state steps only: the first one compiled
          jax.block_until_ready(metrics)
          t_last, step_last = time.perf_counter(), step
        if step % config.log_every == 0 or step == config.num_steps:
          check_finite(step)
          means = jax.device_get(jax.tree.map(lambda *m: sum(m) / len(m), *pending))
          now = time.perf_counter()
          steps_per_s = (step - step_last) / (now - t_last) if step > step_last else 0.0
          t_last, step_last = now, step
          last = {k: float(v) for k, v in means.items()}
          last["nonfinite"] *= len(pending)  # a count, not a mean
          pending = []
          last.update(steps_per_s=steps_per_s, images_per_s=steps_per_s * config.batch_size,
                      bad_images=pipeline.num_bad)
          writer.scalars(step, last)
          if is_main:
            log.info("step %d/%d | d_loss %.4f g_loss %.4f | D(x) %.3f D(G(z)) %.3f | "
                     "%.1f img/s | ETA %s", step, config.num_steps, last["d_loss"], last["g_loss"],
                     last["d_real"], last["d_fake"], last["images_per_s"],
                     _format_eta((config.num_steps - step) / steps_per_s) if steps_per_s else "?")
        if step % config.sample_every == 0 or step == config.num_steps:
          save_samples(step)
        if evaluator and (step % config.eval_every == 0 or step == config.num_steps):
          check_finite(step)  # never score (or keep as best) a diverged state
          t_eval = time.perf_counter()
          run_eval(step)
          t_last += time.perf_counter() - t_eval  # img/s counts training time only
        preempted = stop.received or (
            jax.process_count() > 1 and checkpointer.manager.reached_preemption(step))
        if step % config.checkpoint_every == 0 or step == config.num_steps or preempted:
          check_finite(step)  # never save a diverged state
          save_checkpoint(step)
        if preempted:
          log.warning("stopped by %s at step %d: checkpoint saved; run the same command again to "
                      "resume", stop.received or "preemption", step)
          break
  finally:
    batches.close()
    for c in (checkpointer, best_checkpointer):
      if c is not None:
        c.wait()
        c.close()
    writer.close()
  return last


def _open_checkpoints(workdir: str | pathlib.Path, step: int | None
                      ) -> tuple[Checkpointer, ml_collections.ConfigDict]:
  """(a read-only Checkpointer of a run's checkpoints, with `step` (None: the newest) present,
  the run's config as saved with that step)."""
  directory = pathlib.Path(workdir).expanduser() / "checkpoints"
  if not directory.is_dir():
    raise ConfigError(f"no checkpoint in {directory}; train first or fix --workdir")
  checkpointer = Checkpointer(directory, asynchronous=False, read_only=True)
  if checkpointer.latest_step() is None:
    raise ConfigError(f"no checkpoint in {checkpointer.directory}; train first or fix --workdir")
  if step is not None and step not in checkpointer.all_steps():
    raise ConfigError(f"no checkpoint at step {step}; available: {checkpointer.all_steps()}")
  saved = checkpointer.restore_meta(step)["config"]
  return checkpointer, ml_collections.ConfigDict({**_ADDED_KEYS, **saved})


def load_generator(workdir: str | pathlib.Path, step: int | None = None, use_ema: bool = True):
  """(generate, config) from a run's checkpoint: `generate(z)` maps [N, latent_dim] noise to
  images in [-1, 1].

  Reads only G's parameters, BatchNorm statistics and EMA (no optimizer state);
  uses the EMA parameters when the run kept them (and `use_ema`).
  """
  checkpointer, config = _open_checkpoints(workdir, step)
  g = checkpointer.restore_generator(step)
  checkpointer.close()
  variables = generator_variables(g["g_params"], g.get("g_batch_stats"), g.get("g_ema_params"),
                                  g.get("g_ema_batch_stats"), use_ema=use_ema)
  module = make_generator(config)
  return jax.jit(lambda z: module.apply(variables, z, train=False)), config


def load_state(workdir: str | pathlib.Path, step: int | None = None
               ) -> tuple[GANState, ml_collections.ConfigDict]:
  """(state, config): the whole state of a run's checkpoint (G and D with their BatchNorm
  statistics, the EMA, the optimizers), for what needs D as well as G, such as
  discriminator rejection sampling (`jaxgan.sampling`)."""
  checkpointer, config = _open_checkpoints(workdir, step)
  restored = checkpointer.restore(create_state_from_config(config, jax.random.key(0)), step)
  checkpointer.close()
  if restored is None:
    raise ConfigError(f"no readable checkpoint in {pathlib.Path(workdir) / 'checkpoints'}")
  return restored[0], config


def real_images(config: ml_collections.ConfigDict, num: int, seed: int = 0) -> np.ndarray:
  """float32 [n, S, S, C] in [-1, 1]: up to `num` readable images of the run's dataset,
  prepared as training prepares them, drawn without replacement."""
  pipeline = make_pipeline(config)
  size = len(pipeline.source)
  indices = np.random.default_rng(seed).choice(size, size=min(int(num), size), replace=False)
  return input_pipeline.to_unit_range(pipeline.images(indices))


def drs_sampler(workdir: str | pathlib.Path, step: int | None = None, *,
                calibration_steps: int = 1000, batch_size: int = 64, num_real: int = 10_000,
                candidates: int = 1000, shift_quantile: float | None = None, seed: int = 0,
                use_ema: bool = True
                ) -> tuple[sampling.RejectionSampler, ml_collections.ConfigDict, int]:
  """(sampler, config, number of real images used): discriminator rejection sampling
  (`jaxgan.sampling`) of a run's checkpoint. D is first calibrated against the fixed G
  (the EMA when kept and `use_ema`) for `calibration_steps` steps of `batch_size` real and
  generated images, on up to `num_real` real images of the run's dataset; `sampler.sample(n)`
  then draws G's samples `candidates` at a time and keeps those D accepts. The sampler's
  stream depends on `seed` and, with several processes, on the process index (each draws its
  own share)."""
  try:
    sampling.check_shift_quantile(shift_quantile)
  except ValueError as e:
    raise ConfigError(f"discriminator rejection sampling: {e}") from None
  state, config = load_state(workdir, step)
  if not use_ema:
    state = state.replace(g_ema_params=None, g_ema_batch_stats=None)
  real = real_images(config, num_real, seed)
  if len(real) == 0:
    raise ConfigError("discriminator rejection sampling needs real images, and the run's "
                      "dataset gave none")
  calibrate, draw = jax.random.split(jax.random.key(seed))
  if jax.process_count() > 1:
    draw = jax.random.fold_in(draw, jax.process_index())
  try:
    state = sampling.calibrate_discriminator(state, real, calibrate, steps=calibration_steps,
                                             batch_size=batch_size)
    sampler = sampling.RejectionSampler(state, draw, batch_size=candidates, burn_in=candidates,
                                        shift_quantile=shift_quantile)
  except ValueError as e:
    raise ConfigError(f"discriminator rejection sampling: {e}") from None
  return sampler, config, len(real)


def interpolation_latents(rng: jax.Array, rows: int, columns: int, latent_dim: int,
                          distribution: str = "normal") -> jax.Array:
  """[rows * columns, latent_dim]: each row walks from one random z to another, along a great
  circle (slerp) for normal z, along a straight line for uniform z (which slerp would carry
  out of the cube [-1, 1]^latent_dim)."""
  ends = latents(rng, 2 * rows, latent_dim, distribution=distribution).reshape(rows, 2, latent_dim)
  a, b = ends[:, 0], ends[:, 1]
  t = jnp.linspace(0.0, 1.0, columns)[None, :, None]
  if distribution == "uniform":
    return ((1 - t) * a[:, None] + t * b[:, None]).reshape(rows * columns, latent_dim)
  cos = jnp.sum(a * b, -1, keepdims=True) / (jnp.linalg.norm(a, axis=-1, keepdims=True)
                                             * jnp.linalg.norm(b, axis=-1, keepdims=True))
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None]  # [rows, 1, 1]
  z = (jnp.sin((1 - t) * omega) * a[:, None] + jnp.sin(t * omega) * b[:, None]) / jnp.sin(omega)
  return z.reshape(rows * columns, latent_dim)
