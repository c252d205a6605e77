"""Images/s of jaxgan's input pipeline: from a zip of JPEGs, and from the decoded cache.

    python benchmarks/input_pipeline.py [--batch=64] [--batches=40] [--workers=4]
                                        [--train_img_per_s=41.2]

Sources, each read through `ImagePipeline.iterate` (threads decode, a background
thread prepares batches ahead) exactly as training reads them:
- `celeba-zip-64`: the real CelebA faces as 64x64 JPEGs in a zip
  (../shared/data/celeba_udacity64/celeba_udacity64.zip, when present);
- `celeba-zip-178x218`: a zip of full-size 178x218 JPEGs, generated once into a
  temporary folder, with CelebA's 140x140 center crop and bicubic resize (the
  work the CelebA program does per image);
- `decoded-cache`: the .npy cache built from that zip (memory-mapped, no decoding).
With `--train_img_per_s` (from benchmarks/train_step.py), prints how many times
the train step's consumption each source delivers.
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys
import tempfile
import time
import zipfile

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from jaxgan import input_pipeline  # noqa: E402

SHARED_ZIP = ROOT.parent / "shared" / "data" / "celeba_udacity64" / "celeba_udacity64.zip"


def make_jpeg_zip(path: pathlib.Path, num: int, width: int = 178, height: int = 218) -> None:
  """`num` smooth random RGB JPEGs of CelebA's aligned size (quality 95) in a zip."""
  rng = np.random.default_rng(0)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    for i in range(num):
      small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
      image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
      buf = io.BytesIO()
      image.save(buf, "JPEG", quality=95)
      zf.writestr(f"img/{i:06d}.jpg", buf.getvalue())


def measure(pipeline: input_pipeline.ImagePipeline, batches: int) -> float:
  """Images/s over `batches` batches after one warm-up batch."""
  it = pipeline.iterate(0)
  next(it)
  t = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  seconds = time.perf_counter() - t
  it.close()
  assert batch["image"].shape[0] == pipeline.local_batch_size
  return batches * pipeline.local_batch_size / seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=40, help="timed batches per source")
  parser.add_argument("--workers", type=int, default=4, help="decoding threads")
  parser.add_argument("--num_generated", type=int, default=3000,
                      help="JPEGs in the generated full-size zip")
  parser.add_argument("--train_img_per_s", type=float, default=0.0,
                      help="the train step's images/s, to print the ratio")
  args = parser.parse_args()

  results = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    common = dict(global_batch_size=args.batch, image_size=64, channels=3,
                  num_workers=args.workers)
    if SHARED_ZIP.exists():
      source = input_pipeline.FolderSource(SHARED_ZIP)
      results.append(("celeba-zip-64 (real, 64x64 JPEGs)", measure(
          input_pipeline.ImagePipeline(source, crop="none", **common), args.batches)))
    else:
      print(f"{SHARED_ZIP} is absent: skipping the real 64x64 zip", file=sys.stderr)
    big = tmp / "celeba_like.zip"
    make_jpeg_zip(big, args.num_generated)
    source = input_pipeline.FolderSource(big)
    results.append(("celeba-zip-178x218 (center140 crop + resize)", measure(
        input_pipeline.ImagePipeline(source, crop="center140", **common), args.batches)))
    t = time.perf_counter()
    cached = input_pipeline.ImagePipeline(source, crop="center140", cache_dir=str(tmp / "cache"),
                                          **common)
    build_s = time.perf_counter() - t
    results.append((f"decoded-cache (.npy memmap; built once in {build_s:.1f} s)",
                    measure(cached, args.batches)))

  print(f"\ninput pipeline, batch {args.batch}, {args.workers} decoding threads, "
        f"{os.cpu_count()} CPUs")
  print("source | images/s" + (" | x train step" if args.train_img_per_s else ""))
  print("--- | ---" + (" | ---" if args.train_img_per_s else ""))
  for name, ips in results:
    ratio = f" | {ips / args.train_img_per_s:.1f}x" if args.train_img_per_s else ""
    print(f"{name} | {ips:.0f}{ratio}")


if __name__ == "__main__":
  main()
