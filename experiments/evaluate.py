"""Score a run's checkpoint: FID, KID, Inception Score, precision/recall -> WORKDIR/eval/<step>.json.

    python -m experiments.evaluate --workdir=DIR [--num_samples=10000] [--step=N] \
        [--weights=pt_inception-2015-12-05-6726825d.pth] [--features=inception] [--noema]
    python -m experiments.evaluate --workdir=DIR --drs [--drs_steps=1000] [--drs_real=10000]

`--drs` scores the samples discriminator rejection sampling keeps (`jaxgan.sampling`; D is
first calibrated against the fixed G on real images of the run's dataset) and writes
WORKDIR/eval/<step>-drs.json, beside the plain evaluation, which it leaves as it is.

Settings not given as flags come from the run's config (its `eval` section).
The reference features of the run's dataset are computed once and cached.
"""

from absl import flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's workdir.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_integer("num_samples", None, "Generated images to score (default: eval.num_samples).")
flags.DEFINE_integer("num_reference", None, "Real images for the reference features.")
flags.DEFINE_string("features", None, "Feature network: inception, or package.module:factory.")
flags.DEFINE_string("weights", None, "Path of pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")
flags.DEFINE_string("split", None, "Reference split of a tfds dataset (default: the run's split).")
flags.DEFINE_integer("batch_size", None, "Images per feature-network batch.")
flags.DEFINE_bool("ema", True, "Score the EMA generator when the run keeps one.")
flags.DEFINE_bool("download", True, "Download the FID weights when they are nowhere on disk.")
flags.DEFINE_integer("seed", 0, "--drs: the seed of D's calibration and of the sampler.")
cli.define_drs_flags()


def main(argv):
  del argv
  import jax
  import ml_collections

  from jaxgan import evaluation, parallel, trainer
  from jaxgan.checkpointing import Checkpointer

  trainer.quiet_library_logs()
  parallel.initialize_distributed("auto")
  if FLAGS.drs:
    sampler, config, num_real = cli.drs_sampler(FLAGS.workdir, FLAGS.step, FLAGS.seed,
                                                use_ema=FLAGS.ema)
  else:
    generate, config = trainer.load_generator(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.ema)
  step = FLAGS.step
  if step is None:
    checkpoints = Checkpointer(f"{FLAGS.workdir}/checkpoints", asynchronous=False, read_only=True)
    step = checkpoints.latest_step()
    checkpoints.close()
  e = evaluation.default_config()
  e.update(config.get("eval", ml_collections.ConfigDict()))
  for key in ("num_samples", "num_reference", "features", "weights", "split", "batch_size"):
    if getattr(FLAGS, key) is not None:
      e[key] = getattr(FLAGS, key)
  e.download = FLAGS.download
  config.eval = e
  evaluator = evaluation.Evaluator(config)
  ema = FLAGS.ema and bool(config.get("ema_decay", 0))
  if FLAGS.drs:
    drs = {"calibration_steps": FLAGS.drs_steps, "calibration_batch_size": FLAGS.drs_batch_size,
           "real_images": num_real, "candidates_per_batch": FLAGS.drs_candidates,
           "shift_quantile": FLAGS.drs_shift_quantile, "seed": FLAGS.seed}
    with cli.drs_shortfall():
      result = evaluator.score(lambda start, stop: sampler.sample(stop - start), step,
                               {"ema": ema, "drs": drs, "sampler": "discriminator rejection "
                                "sampling (Azadi et al. 2019)"})
    stats = sampler.stats
    result["protocol"]["drs"].update(accepted=stats.accepted, candidates=stats.candidates,
                                     acceptance=round(stats.acceptance, 6))
    print(f"DRS: kept {stats.accepted} of {stats.candidates} samples ({stats.acceptance:.1%})"
          + (" on process 0" if jax.process_count() > 1 else ""))
  else:
    result = evaluator(generate, step, ema=ema)
  path = evaluation.write_result(FLAGS.workdir, result, suffix="-drs" if FLAGS.drs else "")
  for key, reason in result["skipped"].items():
    print(f"{key} not computed: {reason}")
  print(f"{evaluation.summary_line(result)} -> {path}")


if __name__ == "__main__":
  cli.run(main)
