"""Speed of evaluation: Inception features (images/s) and the scores on 10,000 samples.

    python benchmarks/fid.py [--num=2000] [--batch=200] [--size=64] [--precision=highest]
        [--weights=pt_inception-2015-12-05-6726825d.pth]

Runs pytorch-fid's FID Inception-v3 (ours, in Flax) over `--num` random uint8
images of `--size`x`--size`, batched and split over all local devices, and
prints compile time, images/s and the projected time for 10,000 images (the
issue's target: under 30 s on one H100). Without --weights the network gets
random weights of the right shapes: the speed does not depend on their values.
Then times FID (2048-d statistics), KID (100 subsets of 1000) and
precision/recall on `--scores` x 2048 features, and pytorch-fid's FID on the same
statistics when it is installed (the `fidcheck` extra).
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--num", type=int, default=2000, help="images through the network")
parser.add_argument("--batch", type=int, default=200, help="images per batch (all devices)")
parser.add_argument("--size", type=int, default=64, help="input resolution (resized to 299)")
parser.add_argument("--precision", default="highest", choices=("default", "high", "highest"))
parser.add_argument("--weights", default=None, help="a .pth; default: random weights")
parser.add_argument("--scores", type=int, default=10_000, help="samples for timing the scores")
args = parser.parse_args()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxgan import metrics  # noqa: E402
from jaxgan.metrics import inception  # noqa: E402


def network():
  if args.weights:
    return metrics.InceptionFeatures(args.weights, batch_size=args.batch, precision=args.precision)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32),
                           inception.variable_shapes())
  module = inception.FIDInceptionV3(precision=jax.lax.Precision[args.precision.upper()])
  return metrics.BatchedApply(module, variables, args.batch)


def timed(fn, *a, **k):
  t = time.perf_counter()
  out = fn(*a, **k)
  return out, time.perf_counter() - t


def main():
  devices = jax.local_devices()
  print(f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
        f"jax {jax.__version__}")
  net, load_s = timed(network)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.num, args.size, args.size, 3), dtype=np.uint8)
  _, first_s = timed(net, images[:args.batch])  # compiles
  out, run_s = timed(net, images)
  rate = args.num / run_s
  print(f"inception features: load {load_s:.1f}s, first batch (compile) {first_s:.1f}s, "
        f"{args.num} images in {run_s:.2f}s = {rate:.0f} images/s "
        f"(batch {args.batch}, precision {args.precision}, {args.size}px -> 299)")
  print(f"projected: 10,000 images in {10_000 / rate:.1f}s")
  assert out["pool3"].shape == (args.num, 2048)

  n = args.scores
  f1 = rng.normal(size=(n, 2048)).astype(np.float32)
  f2 = (rng.normal(size=(n, 2048)) + 0.1).astype(np.float32)
  (s1, s2), stats_s = timed(lambda: (metrics.feature_statistics(f1), metrics.feature_statistics(f2)))
  _, fd_s = timed(metrics.frechet_distance, *s1, *s2)
  _, kid_s = timed(metrics.kernel_inception_distance, f1, f2)
  _, pr_s = timed(metrics.precision_recall, f1, f2)
  print(f"scores on {n} x 2048 features: statistics {stats_s:.1f}s, FID {fd_s:.1f}s, "
        f"KID (100 x 1000) {kid_s:.1f}s, precision/recall {pr_s:.1f}s")
  try:  # the reference, when the fidcheck extra is installed
    from pytorch_fid.fid_score import calculate_frechet_distance
  except ImportError:
    return
  _, ref_s = timed(calculate_frechet_distance, *s1, *s2)
  print(f"pytorch-fid's calculate_frechet_distance on the same statistics: {ref_s:.1f}s "
        f"(ours {fd_s:.1f}s)")


if __name__ == "__main__":
  main()
