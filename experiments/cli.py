"""What the entry points share: flag parsing, jaxgan errors reported as one line (exit 2), and
the flags of discriminator rejection sampling."""

import contextlib
import sys

from absl import app, flags


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing where a bad flag or --config.KEY=VALUE is one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l for l in str(e).splitlines() if l.strip()]
    if any(l.startswith("Traceback") for l in lines):  # an error raised inside the config file
      lines = [lines[0].rstrip(":"), lines[-1]]
    _fail(" ".join(lines) + "; see --helpfull")
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a key that isn't there
    _fail(f"unknown config key {str(e).strip(chr(34))} in a --config.KEY=VALUE flag; the keys "
          "are those of the config file")


def run(main) -> None:
  """app.run(main) with one-line errors for flags and for `jaxgan.errors.JaxganError`."""

  def guarded(argv):
    from jaxgan.errors import JaxganError

    if len(argv) > 1:
      _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except JaxganError as e:
      _fail(str(e))

  app.run(guarded, flags_parser=parse_flags)


def seeds_phrase(num_seeds: int) -> str:
  """How a benchmark's summary line names what its figures are: "1 seed" or "mean of N seeds"."""
  return f"mean of {num_seeds} seeds" if num_seeds > 1 else "1 seed"


def define_drs_flags() -> None:
  """--drs and its settings, for the programs that draw a run's samples (sample, evaluate)."""
  flags.DEFINE_bool("drs", False, "Discriminator rejection sampling: keep the samples D accepts.")
  flags.DEFINE_integer("drs_steps", 1000, "DRS: steps of D's calibration against the fixed G.")
  flags.DEFINE_integer("drs_batch_size", 64, "DRS: real (and as many generated) images per "
                       "calibration step.")
  flags.DEFINE_integer("drs_real", 10_000, "DRS: real images of the run's dataset to calibrate "
                       "on.")
  flags.DEFINE_integer("drs_candidates", 1000, "DRS: samples of G scored at a time.")
  flags.DEFINE_float("drs_shift_quantile", None, "DRS: Azadi et al.'s shifted filter (e.g. "
                     "0.95); default: exact rejection sampling.")


def drs_sampler(workdir: str, step, seed: int, use_ema: bool = True):
  """(sampler, config, real images used): `jaxgan.trainer.drs_sampler` with the --drs_*
  flags, after checking them; prints what the calibration used."""
  from jaxgan import trainer
  from jaxgan.errors import ConfigError

  f = flags.FLAGS
  if min(f.drs_steps, f.drs_batch_size, f.drs_real, f.drs_candidates) < 1:
    raise ConfigError("--drs_steps, --drs_batch_size, --drs_real and --drs_candidates must be "
                      ">= 1")
  sampler, config, num_real = trainer.drs_sampler(
      workdir, step, calibration_steps=f.drs_steps, batch_size=f.drs_batch_size,
      num_real=f.drs_real, candidates=f.drs_candidates, shift_quantile=f.drs_shift_quantile,
      seed=seed, use_ema=use_ema)
  print(f"DRS: calibrated D on {num_real} real images for {f.drs_steps} steps")
  return sampler, config, num_real


@contextlib.contextmanager
def drs_shortfall():
  """Rejection sampling that keeps too few of G's samples (`sampling.TooFewAccepted`), as a
  one-line error naming the --drs flags that fix it."""
  from jaxgan.errors import ConfigError
  from jaxgan.sampling import TooFewAccepted

  try:
    yield
  except TooFewAccepted as e:
    raise ConfigError(f"--drs: D kept {e.accepted} of {e.candidates} samples of G, short of "
                      f"{e.num}; soften the filter (--drs_shift_quantile=0.95) or calibrate D "
                      "longer (--drs_steps)") from None
