"""`python -m experiments.toy`: the 2-D mixture mode-collapse benchmark, all seeds at once.

Every seed's GAN is trained in one jitted program: the step is `vmap`-ed over
seeds and `lax.scan`-ned over `eval_every` steps, so 10 seeds cost little more
than one. After each chunk, `eval_samples` samples per seed are scored with
`jaxgan.mixtures.mode_metrics`. The workdir gets `metrics.jsonl` (one line per
evaluation: means and per-seed values, including each seed's mean losses over
the chunk), `results.json` (the final means and per-seed values) and
`samples_seed0.png` (seed 0's samples over the modes).
The seeds' states are checkpointed after each evaluation: the same command
resumes a stopped run, and a larger `num_steps` trains a finished one further.
`profile` tells where a run's samples lie around the modes (`DIR/profile.json`); `rejection`
scores them after discriminator rejection sampling (`DIR/drs.json`); `pool` reports the seeds
of several finished runs of one config together, as if they had been one run.
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from jaxgan import mixtures, models, optimizers, sampling
from jaxgan.checkpointing import ResumableRun, read_run
from jaxgan.errors import ConfigError, check_choice, check_positive_ints, config_errors
from jaxgan.train import (LATENT_DISTRIBUTIONS, GANState, create_state, generate, latents_for,
                          optimizers_from_config, options_from_config, train_step)

log = logging.getLogger(__name__)


# Config keys added since runs were first checkpointed, with the value that reproduces the
# runs saved before them: such runs resume (`ResumableRun`).
ADDED_KEYS = {"lr_schedule": optimizers.DEFAULT_SCHEDULE, "minibatch_key": "step",
              "optimizer": optimizers.DEFAULT_OPTIMIZER, "rms_decay": optimizers.RMSPROP_DECAY,
              "simultaneous": False, "g_steps": 1, "latent_distribution": "normal"}

# Where each step's minibatch indices come from: "own", a per-seed key of their own; "step",
# the step's key, as in the runs made before this option (kept to resume and reproduce them).
# The step's key also feeds G's latents, and there `randint` reads the very bits that G's z
# are made from, so "step" ties each step's G latents to its minibatch.
MINIBATCH_KEYS = ("own", "step")
STREAMS = ("init", "data", "train", "eval", "minibatch", "drs")

# The config keys in which runs that `pool` joins may differ: which seeds they train (a run's
# seeds come from its `seed`, see `seed_streams`) and how often they were scored on the way.
POOL_MAY_DIFFER = ("seed", "num_seeds", "eval_every")


def validate_config(c: ml_collections.ConfigDict) -> None:
  if c.mixture not in mixtures.MIXTURES:
    raise ConfigError(f"config.mixture={c.mixture!r} is unknown; choose one of "
                      f"{', '.join(mixtures.MIXTURES)}")
  check_positive_ints(c, ("num_seeds", "num_train", "batch_size", "num_steps", "eval_every",
                          "eval_samples", "latent_dim", "n_critic", "g_steps", "pack", "d_maxout",
                          "r1_interval"))
  optimizers.check_optimizer(c)
  optimizers.check_schedule(c)
  check_choice(c, "minibatch_key", MINIBATCH_KEYS, "own")
  check_choice(c, "latent_distribution", LATENT_DISTRIBUTIONS, "normal")
  if c.num_steps % c.eval_every:
    raise ConfigError(f"config.num_steps={c.num_steps} must be a multiple of "
                      f"config.eval_every={c.eval_every}")


def samples_per_step(c: ml_collections.ConfigDict) -> int:
  """Real points per step: batch_size packs of `pack` points for each of the n_critic D updates."""
  return c.batch_size * c.pack * c.n_critic


def seed_streams(seed: int, num_seeds: int) -> dict[str, jax.Array]:
  """One key per seed for each of `STREAMS`.

  Seed i's keys do not depend on num_seeds (jax's default partitionable threefry); its
  results may, in the last bits, because XLA rounds vmaps of different widths differently.
  """
  seed_keys = jax.random.split(jax.random.key(seed), num_seeds)
  return {name: jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(seed_keys)
          for i, name in enumerate(STREAMS)}


def make_state(c: ml_collections.ConfigDict, key: jax.Array) -> GANState:
  """One seed's GAN: PacGAN's MLPs (G: BN + ReLU, D: maxout) and Adam."""
  return create_state(
      key,
      generator=models.MLPGenerator(data_shape=(2,), hidden_dims=tuple(c.g_hidden),
                                    batch_norm=c.g_batch_norm, init_std=c.init_std or None),
      discriminator=models.MLPDiscriminator(hidden_dims=tuple(c.d_hidden), maxout=c.d_maxout,
                                            init_std=c.init_std or None,
                                            minibatch=c.get("d_minibatch", "none")),
      **optimizers_from_config(c), latent_dim=c.latent_dim, data_shape=(2,),
      **options_from_config(c))


def init_states(c: ml_collections.ConfigDict, keys: dict[str, jax.Array]) -> GANState:
  """Every seed's initial state, stacked along a leading seed axis."""
  with config_errors():
    return jax.jit(jax.vmap(lambda k: make_state(c, k)))(keys["init"])


def training_points(c: ml_collections.ConfigDict, keys: dict[str, jax.Array]) -> jax.Array:
  """Every seed's `num_train` points of the mixture: [seeds, num_train, 2]."""
  modes, std = mixtures.mixture(c.mixture)
  return jax.jit(jax.vmap(lambda k: mixtures.sample(k, modes, std, c.num_train)))(keys["data"])


def chunk_trainer(c: ml_collections.ConfigDict, length: int | None = None):
  """Every seed's next `length` steps (default `eval_every`) as one jitted program:
  (seeds' states, seeds' points, train keys, minibatch keys) -> (states, each seed's mean
  losses over the steps). The states are donated. `benchmarks/toy_step.py` times this."""
  # As in PacGAN, batch_size counts D's inputs: each D update sees batch_size packs of
  # `pack` real samples (and as many fake), so a step draws batch_size x pack x n_critic points.
  points_per_step = samples_per_step(c)

  def train_chunk(state, points, key, minibatch_key):
    def body(state, _):
      idx = jax.random.randint(jax.random.fold_in(minibatch_key, state.step), (points_per_step,),
                               0, c.num_train)
      return train_step(state, {"image": points[idx]}, key)

    state, metrics = jax.lax.scan(body, state, None, length=length or c.eval_every)
    return state, jax.tree.map(jnp.mean, metrics)

  return jax.jit(jax.vmap(train_chunk), donate_argnums=0)


def sampler(c: ml_collections.ConfigDict, num: int):
  """(seeds' states, seeds' keys) -> `num` samples of each seed's G: [seeds, num, 2]."""
  return jax.jit(jax.vmap(lambda state, key: generate(state, latents_for(state, key, num))))


def plot(samples: np.ndarray, modes: np.ndarray, path: pathlib.Path, size: int = 480) -> None:
  """A scatter plot of `samples` (blue) over the modes (red crosses), as a PNG."""
  lim = float(np.abs(modes).max()) * 1.35
  image = Image.new("RGB", (size, size), "white")
  draw = ImageDraw.Draw(image)
  to_px = lambda p: ((p[0] + lim) / (2 * lim) * size, (lim - p[1]) / (2 * lim) * size)  # noqa: E731
  for x, y in map(to_px, samples):
    draw.point((x, y), fill=(30, 80, 200))
  for x, y in map(to_px, modes):
    draw.line((x - 5, y, x + 5, y), fill=(220, 30, 30), width=2)
    draw.line((x, y - 5, x, y + 5), fill=(220, 30, 30), width=2)
  image.save(path)


def run(c: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains `c.num_seeds` GANs on the mixture; returns (and writes) the results."""
  validate_config(c)
  workdir = pathlib.Path(workdir).expanduser()
  workdir.mkdir(parents=True, exist_ok=True)
  modes, std = mixtures.mixture(c.mixture)
  keys = seed_streams(c.seed, c.num_seeds)
  if c.get("minibatch_key", "own") == "step":
    keys["minibatch"] = keys["train"]
  states = init_states(c, keys)
  data = training_points(c, keys)

  train_fn = chunk_trainer(c)
  draw_fn = sampler(c, c.eval_samples)
  # A larger num_steps trains a finished run further, unless the learning rate decays over it.
  with ResumableRun(workdir, c, may_change=optimizers.may_change_on_resume(c),
                    added_keys=ADDED_KEYS) as run_dir:
    start, seconds = 0, 0.0
    resumed = run_dir.resume(states)
    if resumed is not None:
      states, meta = resumed
      start, seconds = int(meta["step"]), float(meta["seconds"])
      run_dir.check_resume_step(start, c.num_steps, c.eval_every)
      log.info("resumed at step %d of %d", start, c.num_steps)
    t0 = time.perf_counter() - seconds
    for done in range(start + c.eval_every, c.num_steps + 1, c.eval_every):
      states, losses = train_fn(states, data, keys["train"], keys["minibatch"])
      per_seed = _score(draw_fn(states, keys["eval"]), modes, std)[1]
      means = _mean_over_seeds(per_seed, per_seed[0])
      seed_losses = {k: np.asarray(losses[k]).tolist() for k in ("d_loss", "g_loss")}
      entry = {"step": done, **means, "d_loss": float(np.mean(seed_losses["d_loss"])),
               "g_loss": float(np.mean(seed_losses["g_loss"])), "per_seed": per_seed,
               "per_seed_losses": seed_losses, "seconds": round(time.perf_counter() - t0, 1)}
      run_dir.log(entry)
      run_dir.save(done, states, seconds=entry["seconds"])
      log.info("step %d/%d | modes %.2f/%d hq %.1f%% reverse KL %.3f | d_loss %.3f g_loss %.3f "
               "| %.0fs", done, c.num_steps, means["modes"], len(modes), 100 * means["hq"],
               means["reverse_kl"], entry["d_loss"], entry["g_loss"], entry["seconds"])
    # The final scores: recomputed from the restored state when the run was already complete.
    samples, per_seed = _score(draw_fn(states, keys["eval"]), modes, std)
    seconds = run_dir.logged()[-1]["seconds"]
  means = _mean_over_seeds(per_seed, per_seed[0])
  plot(samples[0], modes, workdir / "samples_seed0.png")
  results = {"mixture": c.mixture, "num_modes": len(modes), **means, "num_seeds": c.num_seeds,
             "per_seed": per_seed, "num_steps": c.num_steps, "eval_samples": c.eval_samples,
             "seconds": seconds,
             "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
             "config": json.loads(c.to_json_best_effort())}
  (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  return results


def _restore_run(workdir: pathlib.Path):
  """(config, keys, seeds' states, checkpoint meta) of the run of experiments.toy in `workdir`,
  at its newest checkpoint, with the run's own config."""
  def holds_run(meta):
    saved = meta.get("config") or {}
    return saved.get("mixture") in mixtures.MIXTURES and "num_seeds" in saved

  c, states, meta = read_run(workdir, "experiments.toy", "a 2-D mixture run", holds_run,
                             ADDED_KEYS, lambda c: init_states(c, seed_streams(c.seed, c.num_seeds)),
                             read_only=False)
  return c, seed_streams(c.seed, c.num_seeds), states, meta


def _mean_over_seeds(per_seed: list[dict], keys) -> dict:
  """The seeds' mean of each of `keys`: a float, or a list for list values (the fractions)."""
  return {k: np.mean([s[k] for s in per_seed], axis=0).tolist() for k in keys}


def _report(samples: np.ndarray, modes: np.ndarray, std: float) -> dict:
  """One seed's mode metrics and distance profile (fractions and spread; the bands are
  `mixtures.DISTANCE_BANDS`, given once per file)."""
  profile = mixtures.distance_profile(samples, modes, std)
  return {**mixtures.mode_metrics(samples, modes, std),
          "fractions": profile["fractions"], "spread": profile["spread"]}


def profile(workdir: str | pathlib.Path, num_samples: int = 20_000) -> dict:
  """Each seed's `mixtures.distance_profile` (and mode metrics) at the run's newest checkpoint.

  The run's own config comes from the checkpoint; the samples are `num_samples` per seed
  (more than an evaluation's, for the small fractions). Writes and returns DIR/profile.json.
  """
  workdir = pathlib.Path(workdir).expanduser()
  c, keys, states, meta = _restore_run(workdir)
  modes, std = mixtures.mixture(c.mixture)
  samples = np.asarray(sampler(c, num_samples)(states, keys["eval"]))
  per_seed = [_report(s, modes, std) for s in samples]
  result = {"mixture": c.mixture, "step": int(meta["step"]), "num_samples": num_samples,
            "bands": list(mixtures.DISTANCE_BANDS),
            **_mean_over_seeds(per_seed, ("fractions", "hq", "spread")), "per_seed": per_seed}
  (workdir / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
  return result


def rejection(workdir: str | pathlib.Path, num_samples: int | None = None, *,
              calibration_steps: int = 5_000, calibration_batch: int = 400,
              calibration_lr: float = 2e-4, shift_quantile: float | None = None) -> dict:
  """The run's seeds scored on samples filtered by discriminator rejection sampling.

  At the run's newest checkpoint, each seed's D is calibrated against its G on the run's
  training points (`sampling.calibrate_discriminator`, all seeds in one vmap), then
  `num_samples` (default: the run's eval_samples) samples per seed pass D's test
  (`sampling.rejection_sample`). Reports the mode metrics and distance profile of those and,
  for comparison, of as many unfiltered samples of G. Writes and returns DIR/drs.json.
  """
  with config_errors():
    sampling.check_shift_quantile(shift_quantile)
  workdir = pathlib.Path(workdir).expanduser()
  c, keys, states, meta = _restore_run(workdir)
  num = int(num_samples or c.eval_samples)
  modes, std = mixtures.mixture(c.mixture)
  data = training_points(c, keys)
  calibrate_keys, sample_keys = (jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys["drs"])
                                 for i in range(2))
  t0 = time.perf_counter()
  with config_errors():
    calibrate = functools.partial(sampling.calibrate_discriminator, steps=calibration_steps,
                                  batch_size=calibration_batch, lr=calibration_lr)
    states = jax.jit(jax.vmap(calibrate))(states, data, calibrate_keys)
    jax.block_until_ready(states)
    calibration_seconds = time.perf_counter() - t0
    plain = np.asarray(sampler(c, num)(states, keys["eval"]))
  per_seed = []
  for i in range(c.num_seeds):  # a shortfall raises sampling.TooFewAccepted, as it is
    state = jax.tree.map(lambda a, i=i: a[i], states)
    kept, stats = sampling.rejection_sample(state, sample_keys[i], num,
                                            shift_quantile=shift_quantile)
    per_seed.append({**_report(kept, modes, std), "acceptance": stats.acceptance,
                     "unfiltered": _report(plain[i], modes, std)})
  names = ("modes", "hq", "reverse_kl", "spread", "fractions")
  result = {"mixture": c.mixture, "step": int(meta["step"]), "num_samples": num,
            **_mean_over_seeds(per_seed, (*names, "acceptance")),
            "unfiltered": _mean_over_seeds([s["unfiltered"] for s in per_seed], names),
            "bands": list(mixtures.DISTANCE_BANDS), "num_seeds": c.num_seeds,
            "calibration": {"steps": calibration_steps, "batch_size": calibration_batch,
                            "lr": calibration_lr, "seconds": round(calibration_seconds, 1)},
            "shift_quantile": shift_quantile, "per_seed": per_seed}
  (workdir / "drs.json").write_text(json.dumps(result, indent=2) + "\n")
  return result


def pool(workdirs, out_dir: str | pathlib.Path) -> dict:
  """The seeds of the finished runs in `workdirs`, one config with a different `config.seed`
  each, reported as one run: writes and returns `out_dir`/results.json.

  So 10 seeds can be trained as 3 + 3 + 4 where one 10-seed run does not fit (a small CPU, a
  time limit) and still be reported as PacGAN's 10 runs are. The result has a run's
  results.json fields (means and per-seed values; `seconds` is the runs' sum) and
  `pooled_from`, each run's folder, seed, number of seeds, time and device; its `config` is the
  runs' shared config, without the keys in `POOL_MAY_DIFFER`.
  """
  workdirs = [pathlib.Path(d).expanduser() for d in workdirs]
  out_dir = pathlib.Path(out_dir).expanduser()
  if len(workdirs) < 2:
    raise ConfigError(f"pooling needs at least two run folders, got {len(workdirs)}")
  runs = [_finished_run(d) for d in workdirs]
  first_dir, first = workdirs[0], runs[0]
  shared = {k: v for k, v in {**ADDED_KEYS, **first["config"]}.items()
            if k not in POOL_MAY_DIFFER}
  seeds = {}
  for d, r in zip(workdirs, runs):
    config = {**ADDED_KEYS, **r["config"]}
    for k in sorted((set(shared) | set(config)) - set(POOL_MAY_DIFFER)):
      if config.get(k) != shared.get(k):
        raise ConfigError(f"{d} differs from {first_dir} in config.{k} ({config.get(k)!r}, not "
                          f"{shared.get(k)!r}); pool runs of one config that differ in seed")
    seed = config["seed"]
    if seed in seeds:
      raise ConfigError(f"{seeds[seed]} and {d} both have config.seed={seed}, so they trained "
                        "the same seeds; pool runs made with different --config.seed")
    seeds[seed] = d
  resolved = {d.resolve() for d in workdirs}
  if out_dir.resolve() in resolved or (out_dir / "checkpoints").exists() or (
      (out_dir / "results.json").exists() and "pooled_from" not in _read_json(out_dir / "results.json")):
    raise ConfigError(f"{out_dir} holds a run of its own; give the pooled results a new folder")
  per_seed = [s for r in runs for s in r["per_seed"]]
  result = {"mixture": first["mixture"], "num_modes": first["num_modes"],
            **_mean_over_seeds(per_seed, per_seed[0]),
            "num_seeds": len(per_seed), "per_seed": per_seed, "num_steps": first["num_steps"],
            "eval_samples": first["eval_samples"],
            "seconds": round(sum(r["seconds"] for r in runs), 1),
            "pooled_from": [{"workdir": str(d.resolve()), "seed": r["config"]["seed"],
                             "num_seeds": r["num_seeds"], "seconds": r["seconds"],
                             "device": r.get("device")} for d, r in zip(workdirs, runs)],
            "config": shared}
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
  return result


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path} ({e}); it is not a result of experiments.toy") from None


def _finished_run(workdir: pathlib.Path) -> dict:
  """The results.json of the finished run in `workdir`, checked to be one of experiments.toy
  made by training (not itself a pool)."""
  path = workdir / "results.json"
  if not path.exists():
    raise ConfigError(f"{workdir} has no results.json: pool finished runs (the command that "
                      "made a run resumes it to the end)")
  r = _read_json(path)
  if not isinstance(r, dict) or not {"per_seed", "config", "num_steps"} <= set(r) or (
      r["config"].get("mixture") not in mixtures.MIXTURES):
    raise ConfigError(f"{path} is not a result of experiments.toy")
  if "pooled_from" in r:
    raise ConfigError(f"{workdir} holds pooled results; pool the runs it names instead")
  return r


def _score(samples: jax.Array, modes: np.ndarray, std: float) -> tuple[np.ndarray, list[dict]]:
  """Each seed's samples (as NumPy) and their mode metrics."""
  samples = np.asarray(samples)
  return samples, [mixtures.mode_metrics(s, modes, std) for s in samples]
