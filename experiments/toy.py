"""The 2-D mixture mode-collapse benchmark, all seeds in one jitted program.

    python -m experiments.toy --config=experiments/configs/toy.py:ring --workdir=DIR \
        [--config.num_seeds=10] [--config.pack=4]

Variants: ring | grid (PacGAN's baseline GAN), ring-best | grid-best (our best setting),
smoke (tests).

Writes DIR/results.json (modes, hq, reverse_kl: means over seeds, and per seed),
DIR/metrics.jsonl and DIR/samples_seed0.png.

    python -m experiments.toy --workdir=DIR --profile

instead profiles the run in DIR at its newest checkpoint, with its own config: where its
samples lie around the modes (HQ, between modes, ...), in DIR/profile.json.

    python -m experiments.toy --workdir=DIR --drs [--drs_steps=5000] [--drs_samples=N]

scores the run in DIR at its newest checkpoint on samples filtered by discriminator
rejection sampling (each seed's D calibrated against its G first; `jaxgan.sampling`), next
to as many unfiltered samples, in DIR/drs.json.

    python -m experiments.toy --workdir=OUT --pool=DIR1,DIR2,DIR3

reports the seeds of finished runs of one config made with different --config.seed (say
3 + 3 + 4 seeds where one 10-seed run does not fit) as one run, in OUT/results.json.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from experiments import cli

DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "toy.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for results.json, metrics.jsonl, the plot.",
                    required=True)
flags.DEFINE_bool("profile", False, "Profile the run in --workdir (its own config; --config is "
                  "ignored) instead of training: where its samples lie around the modes.")
flags.DEFINE_integer("profile_samples", 20_000, "Samples per seed for --profile.")
flags.DEFINE_bool("drs", False, "Score the run in --workdir (its own config) on samples kept by "
                  "discriminator rejection sampling, instead of training.")
flags.DEFINE_integer("drs_steps", 5_000, "Steps of D's calibration against G for --drs.")
flags.DEFINE_integer("drs_samples", 0, "Accepted samples per seed for --drs (0: the run's "
                     "eval_samples).")
flags.DEFINE_float("drs_shift_quantile", None, "--drs: unset is exact rejection sampling; q in "
                   "(0, 1) shifts the filter to F's q-quantile (Azadi et al.): about 1 - q of "
                   "the samples then pass with probability above 1/2.")
flags.DEFINE_list("pool", None, "Finished run folders of one config with different "
                  "--config.seed: report their seeds together in --workdir/results.json "
                  "instead of training.")
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG + ":ring", "Benchmark configuration.",
                                lock_config=True)


def main(argv):
  del argv
  from jaxgan import mixture_benchmark, trainer
  from jaxgan.errors import ConfigError

  trainer.quiet_library_logs()
  if FLAGS.profile and FLAGS.drs:
    raise ConfigError("--profile and --drs each read the run in --workdir; give one of them")
  if FLAGS.pool is not None:
    if FLAGS.profile or FLAGS.drs:
      raise ConfigError("--pool writes --workdir/results.json, and --profile and --drs read a "
                        "run in --workdir; give them separately")
    r = mixture_benchmark.pool(FLAGS.pool, FLAGS.workdir)
    for run in r["pooled_from"]:
      print(f"{run['workdir']}: seed {run['seed']}, {run['num_seeds']} seeds")
    print(f"{r['mixture']}: {r['modes']:.2f}/{r['num_modes']} modes, {100 * r['hq']:.1f}% HQ, "
          f"reverse KL {r['reverse_kl']:.3f} (mean of {r['num_seeds']} seeds of "
          f"{len(r['pooled_from'])} runs) -> {FLAGS.workdir}/results.json")
    return
  if FLAGS.drs:
    if FLAGS.drs_steps < 1 or FLAGS.drs_samples < 0:
      raise ConfigError(f"--drs_steps must be >= 1 and --drs_samples >= 0, got "
                        f"{FLAGS.drs_steps} and {FLAGS.drs_samples}")
    with cli.drs_shortfall():
      r = mixture_benchmark.rejection(FLAGS.workdir, FLAGS.drs_samples or None,
                                      calibration_steps=FLAGS.drs_steps,
                                      shift_quantile=FLAGS.drs_shift_quantile)
    print(f"{r['mixture']} at step {r['step']}, {r['num_samples']} samples per seed, means of "
          f"{r['num_seeds']} seeds: modes / HQ / reverse KL / between modes (>10 std)")
    rows = [("G", r["unfiltered"]), (f"G + DRS (accepts {100 * r['acceptance']:.1f}%)", r)]
    rows += [(f"  seed {i}, G + DRS", s) for i, s in enumerate(r["per_seed"])]
    for name, row in rows:
      print(f"{name:>28}: {row['modes']:.2f} / {100 * row['hq']:.1f}% / {row['reverse_kl']:.3f} "
            f"/ {100 * row['fractions'][-1]:.1f}%")
    print(f"-> {FLAGS.workdir}/drs.json")
    return
  if FLAGS.profile:
    p = mixture_benchmark.profile(FLAGS.workdir, FLAGS.profile_samples)
    bands = ["0", *(f"{b:g}" for b in p["bands"])]
    labels = [f"{lo}-{hi}" for lo, hi in zip(bands, bands[1:])] + [f">{bands[-1]}"]
    print(f"{p['mixture']} at step {p['step']}, {p['num_samples']} samples per seed: share of "
          f"samples by distance to the nearest mode, in stds ({', '.join(labels)}); spread "
          "of the modes over the mixture's std")
    for name, row in [("mean", p), *((f"seed {i}", s) for i, s in enumerate(p["per_seed"]))]:
      print(f"{name:>7}: HQ {100 * row['hq']:5.1f}% | "
            + " ".join(f"{100 * f:5.1f}%" for f in row["fractions"])
            + f" | spread {row['spread']:.2f}")
    return
  r = mixture_benchmark.run(FLAGS.config, FLAGS.workdir)
  print(f"{r['mixture']}: {r['modes']:.2f}/{r['num_modes']} modes, {100 * r['hq']:.1f}% HQ, "
        f"reverse KL {r['reverse_kl']:.3f} ({cli.seeds_phrase(r['num_seeds'])}) -> "
        f"{FLAGS.workdir}/results.json")


if __name__ == "__main__":
  cli.run(main)
