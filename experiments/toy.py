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
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG + ":ring", "Benchmark configuration.",
                                lock_config=True)


def main(argv):
  del argv
  from jaxgan import mixture_benchmark, trainer

  trainer.quiet_library_logs()
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
        f"reverse KL {r['reverse_kl']:.3f} (mean of {r['num_seeds']} seeds) -> "
        f"{FLAGS.workdir}/results.json")


if __name__ == "__main__":
  cli.run(main)
