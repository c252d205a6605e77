"""Stacked MNIST, the 1000-mode benchmark (Metz et al. 2017; VEEGAN; PacGAN Table 2).

Each training image stacks 3 random MNIST digits as its R, G and B channels
(padded from 28 to 32 pixels with the background value, or at 28 pixels as PacGAN's
code has them), so there are 10^3 modes. A DCGAN trains on `num_train` such images;
`eval_samples` of its samples are labelled channel by channel by the MNIST classifier
of `jaxgan.mnist`, and scored by the modes they cover and the KL divergence of their
mode histogram from uniform, KL(p || uniform) = sum p log(1000 p).

The training images are built on the device from MNIST and an index table
inside the jitted step, so no input pipeline is involved.

The config's `:pacgan` variant is the protocol of PacGAN's released Stacked MNIST code
(DCGAN-tensorflow's networks at 28x28, real pixels in [0, 1], digits from MNIST's train and
test images, packs formed once and read in order, G run per pack slot, two G steps per D
step, z ~ U(-1, 1), 100k D steps); docs/results.md lists each difference.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgan import mixture_benchmark, mnist, models, optimizers, summary
from jaxgan.checkpointing import ResumableRun, read_run
from jaxgan.errors import ConfigError, check_choice, check_positive_ints, config_errors
from jaxgan.train import (LATENT_DISTRIBUTIONS, GANState, create_state, optimizers_from_config,
                          options_from_config, sample, train_step)

log = logging.getLogger(__name__)

NUM_DIGITS = 3
NUM_MODES = 10 ** NUM_DIGITS
IMAGE_SIZE = 32  # the default: MNIST's 28 pixels padded to a power of two for the DCGAN
ARCHITECTURES = ("dcgan", "dcgan_tf")  # models.DCGAN* (pytorch/examples) | models.DCGANTF*
REAL_RANGES = ("signed", "unit")  # real pixels in [-1, 1] | in [0, 1] (PacGAN's code)
DIGIT_SOURCES = ("train", "train+test")  # the MNIST images that are stacked
REAL_ORDERS = ("random", "epochs")  # rows drawn anew each step | the set read in order

# Config keys added since runs were first checkpointed, with the value that reproduces the
# runs saved before them (`ResumableRun`).
ADDED_KEYS = {"lr_schedule": optimizers.DEFAULT_SCHEDULE,
              "optimizer": optimizers.DEFAULT_OPTIMIZER, "rms_decay": optimizers.RMSPROP_DECAY,
              "g_steps": 1, "latent_distribution": "normal", "image_size": IMAGE_SIZE,
              "architecture": "dcgan", "real_range": "signed", "digit_source": "train",
              "real_order": "random", "generator_per_slot": False, "conv_impl": "auto"}


def _option(c: ml_collections.ConfigDict, key: str):
  """config.<key>, or for a run saved before the key existed the value that reproduces it."""
  return c.get(key, ADDED_KEYS[key])


def padded_digits(images: np.ndarray, image_size: int = IMAGE_SIZE,
                  real_range: str = "signed") -> jax.Array:
  """uint8 MNIST [N, 28, 28] -> float32 [N, image_size, image_size] in [-1, 1] ("signed") or
  [0, 1] ("unit"), centred and padded with the background (the range's low end)."""
  pad = (image_size - 28) // 2
  x = jnp.asarray(images, jnp.float32)
  x = x / 127.5 - 1.0 if real_range == "signed" else x / 255.0
  return jnp.pad(x, ((0, 0), (pad, image_size - 28 - pad), (pad, image_size - 28 - pad)),
                 constant_values=-1.0 if real_range == "signed" else 0.0)


def stack(digits: jax.Array, index: jax.Array) -> jax.Array:
  """Digit images [N, 32, 32] and an index [B, 3] -> stacked images [B, 32, 32, 3]."""
  return jnp.moveaxis(digits[index], 1, -1)


def random_index(key: jax.Array, num: int, num_digits: int) -> jax.Array:
  """[num, 3] random digit indices: image i stacks digits index[i, 0], index[i, 1], index[i, 2]."""
  return jax.random.randint(key, (num, NUM_DIGITS), 0, num_digits)


def as_signed(images: jax.Array, real_range: str) -> jax.Array:
  """Images in the data's range (`real_range`) mapped to [-1, 1], where the classifier and
  the sample grids read them."""
  return 2.0 * images - 1.0 if real_range == "unit" else images


def label_channels(classifier_params, images: jax.Array, batch_size: int = 1000,
                   real_range: str = "signed") -> np.ndarray:
  """Images [N, S, S, 3] in the data's range (`real_range`) -> the digit the classifier (which
  reads [-1, 1]) reads in each channel's central 28x28, [N, 3]."""
  pad = (images.shape[1] - 28) // 2
  crops = as_signed(images[:, pad:pad + 28, pad:pad + 28, :], real_range)  # [N, 28, 28, 3]
  per_channel = jnp.moveaxis(crops, -1, 1).reshape(-1, 28, 28, 1)
  return mnist.predict(classifier_params, per_channel, batch_size).reshape(-1, NUM_DIGITS)


def mode_metrics(digits: np.ndarray) -> dict[str, float]:
  """{"modes": modes with >= 1 sample (of 1000), "kl": KL(mode histogram || uniform)}."""
  digits = np.asarray(digits)
  modes = digits @ (10 ** np.arange(NUM_DIGITS - 1, -1, -1))
  p = np.bincount(modes, minlength=NUM_MODES).astype(np.float64) / len(modes)
  nz = p > 0
  return {"modes": int(nz.sum()), "kl": float(np.sum(p[nz] * np.log(NUM_MODES * p[nz])))}


def validate_config(c: ml_collections.ConfigDict) -> None:
  check_positive_ints(c, ("num_seeds", "num_train", "batch_size", "num_steps", "eval_every",
                          "eval_samples", "latent_dim", "ngf", "ndf", "pack", "n_critic",
                          "g_steps"))
  optimizers.check_optimizer(c)
  optimizers.check_schedule(c)
  check_choice(c, "latent_distribution", LATENT_DISTRIBUTIONS, "normal")
  for key, choices in (("architecture", ARCHITECTURES), ("real_range", REAL_RANGES),
                       ("digit_source", DIGIT_SOURCES), ("real_order", REAL_ORDERS)):
    check_choice(c, key, choices, ADDED_KEYS[key])
  check_choice(c, "conv_impl", models.layers.CONV_IMPLS, ADDED_KEYS["conv_impl"])
  size, architecture = _option(c, "image_size"), _option(c, "architecture")
  if architecture == "dcgan_tf" and _option(c, "conv_impl") == "tap_matmul":
    raise ConfigError("config.conv_impl='tap_matmul' is a form of the 'dcgan' networks only; "
                      "use 'auto', 'xla' or 'patches' with architecture='dcgan_tf'")
  if size not in (28, 32):
    raise ConfigError(f"config.image_size={size!r}: Stacked MNIST trains at 28 (MNIST's own "
                      "size) or 32 (padded); use one of those")
  if architecture == "dcgan" and size != 32:
    raise ConfigError(f"config.image_size={size} with config.architecture='dcgan': that DCGAN "
                      "needs a power of two; use image_size=32, or architecture='dcgan_tf'")
  if _option(c, "real_order") == "epochs" and c.num_train % (c.batch_size * c.n_critic):
    raise ConfigError(f"config.real_order='epochs' reads num_train={c.num_train} packs, "
                      f"batch_size x n_critic={c.batch_size * c.n_critic} per step; make "
                      "num_train a multiple of that")
  if c.num_steps % c.eval_every:
    raise ConfigError(f"config.num_steps={c.num_steps} must be a multiple of "
                      f"config.eval_every={c.eval_every}")
  if not c.classifier_dir:
    raise ConfigError("config.classifier_dir is empty; train the classifier first with "
                      "`python -m experiments.mnist_classifier --workdir=DIR` and pass "
                      "--config.classifier_dir=DIR")


def make_state(c: ml_collections.ConfigDict, key: jax.Array) -> GANState:
  """A DCGAN at image_size x image_size x 3 (widths ngf/ndf; pytorch/examples' structure, or
  DCGAN-tensorflow's with architecture="dcgan_tf"; convolutions in the form `conv_impl`),
  Adam, and the config's training options (PacGAN packing with `pack` > 1, the Improved
  Techniques, ...)."""
  size, conv_impl = _option(c, "image_size"), _option(c, "conv_impl")
  if _option(c, "architecture") == "dcgan_tf":
    if c.get("d_minibatch", "none") != "none":
      raise ConfigError(f"config.d_minibatch={c.d_minibatch!r} is an option of the 'dcgan' "
                        "discriminator only; use architecture='dcgan' or d_minibatch='none'")
    generator = models.DCGANTFGenerator(image_size=size, channels=3, ngf=c.ngf,
                                        conv_impl=conv_impl)
    discriminator = models.DCGANTFDiscriminator(image_size=size, channels=3, ndf=c.ndf,
                                                conv_impl=conv_impl)
  else:
    generator = models.DCGANGenerator(image_size=size, channels=3, ngf=c.ngf, conv_impl=conv_impl)
    discriminator = models.DCGANDiscriminator(image_size=size, channels=3, ndf=c.ndf,
                                              minibatch=c.get("d_minibatch", "none"),
                                              conv_impl=conv_impl)
  return create_state(key, generator=generator, discriminator=discriminator,
                      **optimizers_from_config(c), latent_dim=c.latent_dim,
                      data_shape=(size, size, 3), **options_from_config(c))


def _evaluate(state, classifier, c, key) -> tuple[dict, jax.Array]:
  digits, first = [], None
  for i in range(-(-c.eval_samples // 1000)):
    images = sample(state, jax.random.fold_in(key, i), 1000)
    first = images if first is None else first
    digits.append(label_channels(classifier, images, real_range=_option(c, "real_range")))
  return mode_metrics(np.concatenate(digits)[:c.eval_samples]), first


def _keys(c: ml_collections.ConfigDict) -> tuple[jax.Array, list[jax.Array]]:
  """The run's root key and each seed's key; seeds are prefix-stable (seed i's key does not
  depend on num_seeds)."""
  key = jax.random.key(c.seed)
  return key, [jax.random.fold_in(key, 100 + seed) for seed in range(c.num_seeds)]


def _training_set(c: ml_collections.ConfigDict, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """MNIST's digits (its training images, or with digit_source="train+test" all 70,000) as the
  config's images, and the [num_train, 3] index that stacks them into the training set; its
  first eval_samples rows are the real images every evaluation is compared with."""
  mnist_images, _ = mnist.load(c.data_dir, "train")
  if _option(c, "digit_source") == "train+test":
    mnist_images = np.concatenate([mnist_images, mnist.load(c.data_dir, "test")[0]])
  return (padded_digits(mnist_images, _option(c, "image_size"), _option(c, "real_range")),
          random_index(jax.random.fold_in(key, 0), c.num_train, len(mnist_images)))


def _real_scores(c: ml_collections.ConfigDict, classifier, digits: jax.Array,
                 index: jax.Array) -> dict[str, float]:
  """The modes and KL of the training set's first eval_samples images: the real data's ceiling
  that every evaluation is set beside."""
  return mode_metrics(label_channels(classifier, stack(digits, index[:c.eval_samples]),
                                     real_range=_option(c, "real_range")))


def _pack_table(c: ml_collections.ConfigDict, key: jax.Array) -> jax.Array | None:
  """With real_order="epochs": the num_train packs, formed once as PacGAN's code forms them,
  `pack` training images drawn with replacement from the num_train of the training set
  ([num_train * pack] rows of the index; pack i is entries i * pack ... i * pack + pack - 1).
  None with real_order="random"."""
  if _option(c, "real_order") != "epochs":
    return None
  return jax.random.randint(jax.random.fold_in(key, 3), (c.num_train * c.pack,), 0, c.num_train)


def _real_images(c: ml_collections.ConfigDict, digits: jax.Array, index: jax.Array,
                 packs: jax.Array | None, step: jax.Array, rng: jax.Array) -> jax.Array:
  """The real images of one step: batch_size x pack rows of the index, drawn with replacement
  ("random"), or the step's batch of the fixed packs (`_pack_table`) read in order, epoch after
  epoch ("epochs"; as PacGAN's code, which does not shuffle them)."""
  images_per_step = mixture_benchmark.samples_per_step(c)
  if packs is not None:
    batches = c.num_train // (c.batch_size * c.n_critic)
    rows = jax.lax.dynamic_slice_in_dim(packs, (step % batches) * images_per_step,
                                        images_per_step)
  else:
    rows = jax.random.randint(jax.random.fold_in(jax.random.fold_in(rng, 1), step),
                              (images_per_step,), 0, index.shape[0])
  return stack(digits, index[rows])


def rescore(workdir: str | pathlib.Path, classifier_dir: str | pathlib.Path) -> dict:
  """The newest checkpoint of the run in `workdir` scored again by the classifier in
  `classifier_dir`: the same samples as that checkpoint's evaluation, and the same real
  images. Shows how much a row depends on which classifier labelled it. Writes nothing."""
  def holds_run(meta):
    return "classifier_dir" in (meta.get("config") or {}) and "seed_step" in meta

  def target(c):  # the structure to restore into (any seed's); the values come from the checkpoint
    with config_errors():
      return make_state(c, jax.random.fold_in(_keys(c)[1][0], 0))

  c, state, meta = read_run(workdir, "experiments.stacked_mnist", "a Stacked MNIST run",
                            holds_run, ADDED_KEYS, target, read_only=True)
  key, seed_keys = _keys(c)
  seed = int(meta["seed"])
  classifier, classifier_metrics = mnist.load_classifier(classifier_dir)
  digits, index = _training_set(c, key)
  scores, _ = _evaluate(state, classifier, c, jax.random.fold_in(seed_keys[seed], 2))
  return {**scores, "seed": seed, "step": int(meta["seed_step"]),
          "real_data": _real_scores(c, classifier, digits, index),
          "classifier_digest": classifier_metrics["params_digest"],
          "classifier_test_accuracy": classifier_metrics.get("test_accuracy"),
          "scored_by_digest": meta.get("classifier_digest")}


def run(c: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains `c.num_seeds` DCGANs on Stacked MNIST one after another; returns (and writes)
  results.json with the mean and per-seed modes and KL, and the real data's own scores.
  Rerun on the same workdir, it goes on from its newest checkpoint (`ResumableRun`); with a
  larger `num_steps` (at a constant learning rate) it trains a run on its first seed further."""
  validate_config(c)
  key, seed_keys = _keys(c)
  with config_errors():  # before any data is read; each state is consumed (donated) in turn
    states = [make_state(c, jax.random.fold_in(k, 0)) for k in seed_keys]
  workdir = pathlib.Path(workdir).expanduser()
  # conv_impl changes only the rounding: a run may go on in another form
  with ResumableRun(workdir, c, may_change=optimizers.may_change_on_resume(c) + ("conv_impl",),
                    added_keys=ADDED_KEYS) as run_dir:
    # A checkpoint after every evaluation, numbered seed x num_steps + step; its meta carries
    # the finished seeds' scores, so a rerun goes on from the seed and step it stopped at.
    per_seed, first_seed, first_step, seconds = [], 0, 0, 0.0
    classifier, classifier_metrics = mnist.load_classifier(c.classifier_dir)
    digest = classifier_metrics["params_digest"]
    resumed = run_dir.resume(states[0])
    if resumed is not None:
      state, meta = resumed
      if meta.get("classifier_digest", digest) != digest:
        raise ConfigError(
            f"the classifier in {c.classifier_dir} (weights {digest}) is not the one that "
            f"scored this run so far (weights {meta['classifier_digest']}); put that one back "
            f"there, or start a new --workdir")
      per_seed, seconds = list(meta["per_seed"]), float(meta["seconds"])
      first_seed, first_step = int(meta["seed"]), int(meta["seed_step"])
      saved_steps = meta["config"]["num_steps"]
      if first_seed > 0 and saved_steps != c.num_steps:
        finished = ("seed 0 was", "its state is") if first_seed == 1 else (
            f"seeds 0-{first_seed - 1} were", "their states are")
        raise ConfigError(
            f"{workdir} holds a run whose {finished[0]} trained to {saved_steps} steps "
            f"({finished[1]} not kept), so config.num_steps={c.num_steps} cannot train it "
            f"further; keep num_steps={saved_steps} or use a new --workdir")
      run_dir.check_resume_step(first_step, c.num_steps)
      if first_step == c.num_steps:
        first_seed, first_step = first_seed + 1, 0
      else:  # this seed goes on (perhaps past the num_steps it had finished at)
        states[first_seed], per_seed = state, per_seed[:first_seed]
      log.info("resumed at seed %d step %d", first_seed, first_step)
    digits, index = _training_set(c, key)
    packs = _pack_table(c, key)
    real_scores = _real_scores(c, classifier, digits, index)
    log.info("real Stacked MNIST (%d images): %d modes, KL %.3f", c.eval_samples,
             real_scores["modes"], real_scores["kl"])

    # As in PacGAN, batch_size counts what D judges: a step takes batch_size packs of `pack`.
    def step(state, digits, index, packs, rng):
      return train_step(state, {"image": _real_images(c, digits, index, packs, state.step, rng)},
                        rng)

    step = jax.jit(step, donate_argnums=0)
    t0 = time.perf_counter() - seconds
    for seed in range(first_seed, c.num_seeds):
      state, seed_key = states[seed], seed_keys[seed]
      states[seed] = None
      train_key, eval_key = jax.random.fold_in(seed_key, 1), jax.random.fold_in(seed_key, 2)
      start = first_step if seed == first_seed else 0
      for done in range(start + c.eval_every, c.num_steps + 1, c.eval_every):
        losses = []
        for _ in range(c.eval_every):  # a Python loop: XLA:CPU convolutions are slow inside scan
          state, metrics = step(state, digits, index, packs, train_key)
          losses.append(metrics)
        losses = {k: float(np.mean([m[k] for m in jax.device_get(losses)]))
                  for k in ("d_loss", "g_loss")}
        scores, images = _evaluate(state, classifier, c, eval_key)
        entry = {"seed": seed, "step": done, **scores, **losses,
                 "seconds": round(time.perf_counter() - t0, 1)}
        run_dir.log(entry)
        log.info("seed %d step %d/%d | modes %d/1000 KL %.3f | d_loss %.3f g_loss %.3f | %.0fs",
                 seed, done, c.num_steps, scores["modes"], scores["kl"], losses["d_loss"],
                 losses["g_loss"], entry["seconds"])
        if done == c.num_steps:
          per_seed.append(scores)
          if seed == 0:
            grid = as_signed(images[:64], _option(c, "real_range"))
            summary.save_png(workdir / "samples_seed0.png",
                             summary.image_grid(np.asarray(grid), columns=8))
        run_dir.save(seed * c.num_steps + done, state, seed=seed, seed_step=done,
                     per_seed=per_seed, seconds=entry["seconds"], classifier_digest=digest)
    seconds = run_dir.logged()[-1]["seconds"]
  results = {"modes": float(np.mean([s["modes"] for s in per_seed])),
             "kl": float(np.mean([s["kl"] for s in per_seed])), "num_seeds": c.num_seeds,
             "per_seed": per_seed, "real_data": real_scores, "num_steps": c.num_steps,
             "eval_samples": c.eval_samples, "classifier_test_accuracy":
                 classifier_metrics.get("test_accuracy"), "classifier_digest": digest,
             "seconds": seconds,
             "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
             "config": json.loads(c.to_json_best_effort())}
  (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  return results
