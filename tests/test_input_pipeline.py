import io
import os
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments.configs import celeba
from jaxgan import input_pipeline as ip
from jaxgan.errors import ConfigError, DataError


def write_images(folder, n=12, corrupt=1):
  """n images of assorted sizes and modes (RGB, L, RGBA, P; jpg/png/webp), plus `corrupt` bad files."""
  rng = np.random.default_rng(0)
  (folder / "sub" / "deeper").mkdir(parents=True)
  modes, suffixes = ["RGB", "L", "RGBA", "P"], [".png", ".jpg", ".webp", ".PNG"]
  for i in range(n):
    size = (20 + i, 24 + 2 * i)
    image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
    image = image.convert(modes[i % 4]) if modes[i % 4] != "P" else image.quantize(16)
    where = folder / ("sub" if i % 2 else "") / ("deeper" if i % 3 == 0 else "")
    where.mkdir(parents=True, exist_ok=True)
    image.save(where / f"img{i:02d}{suffixes[i % 4]}")
  for j in range(corrupt):
    if j % 2:  # a real JPEG cut short, as an interrupted download leaves it
      buffer = io.BytesIO()
      Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
      (folder / "sub" / f"broken{j}.jpg").write_bytes(buffer.getvalue()[:300])
    else:
      (folder / "sub" / f"broken{j}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  (folder / "notes.txt").write_text("not an image")


def zip_folder(folder, path):
  with zipfile.ZipFile(path, "w") as zf:
    for p in sorted(folder.rglob("*")):
      if p.is_file():
        zf.write(p, "celeba/" + str(p.relative_to(folder)))
  return path


def pipeline(source, batch=4, **kwargs):
  kwargs.setdefault("max_bad_fraction", 0.2)
  return ip.ImagePipeline(source, global_batch_size=batch, image_size=8, channels=3, seed=1,
                          num_workers=2, **kwargs)


def test_folder_and_zip_sources_read_the_same_images_and_skip_corrupt_ones(tmp_path):
  write_images(tmp_path / "imgs", corrupt=2)
  folder = ip.FolderSource(tmp_path / "imgs")
  zipped = ip.FolderSource(zip_folder(tmp_path / "imgs", tmp_path / "imgs.zip"))
  assert len(folder) == len(zipped) == 14  # 12 images + garbage + truncated; .txt ignored
  pf, pz = pipeline(folder), pipeline(zipped)
  for t in range(pf.steps_per_epoch + 1):  # a whole epoch and one more batch
    a, b = pf.batch(t)["image"], pz.batch(t)["image"]
    assert a.shape == (4, 8, 8, 3) and a.dtype == np.float32
    assert -1 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
  assert pf.num_bad == pz.num_bad == 2


def test_too_many_bad_images_is_an_error(tmp_path):
  write_images(tmp_path / "imgs", n=4, corrupt=4)
  p = pipeline(ip.FolderSource(tmp_path / "imgs"), batch=8, max_bad_fraction=0.1)
  with pytest.raises(DataError, match="unreadable, more than data.max_bad_fraction=0.1"):
    p.batch(0)


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: d, "no images"),
    (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", "neither a folder nor a .zip"),
])
def test_folder_source_errors(tmp_path, make, message):
  with pytest.raises(DataError, match=message):
    ip.FolderSource(make(tmp_path))


def test_deterministic_order_epochs_and_process_slices():
  source = ip.SyntheticSource(10, 8, 3)
  one = pipeline(source, batch=4)
  assert one.steps_per_epoch == 2  # remainder of 2 dropped
  # Each epoch is a permutation; epochs differ; same seed gives the same order.
  e0 = np.concatenate([one._indices(0), one._indices(1)])
  e1 = np.concatenate([one._indices(2), one._indices(3)])
  assert len(set(e0)) == 8 and not np.array_equal(e0, e1)
  np.testing.assert_array_equal(e0, np.concatenate([pipeline(source, batch=4)._indices(t)
                                                    for t in (0, 1)]))
  # Two processes each take half of the same global batch.
  halves = [pipeline(source, batch=4, process_index=p, process_count=2).batch(3)["image"]
            for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), one.batch(3)["image"])
  # iterate(start) yields batch(start), batch(start + 1), ...
  it = one.iterate(start=5)
  for t in (5, 6, 7):
    np.testing.assert_array_equal(next(it)["image"], one.batch(t)["image"])
  it.close()


def test_decoded_cache_gives_the_same_batches_and_is_built_once(tmp_path):
  write_images(tmp_path / "imgs")
  plain = pipeline(ip.FolderSource(tmp_path / "imgs"))
  cached = pipeline(ip.FolderSource(tmp_path / "imgs"), cache_dir=str(tmp_path / "cache"))
  (npy,) = (tmp_path / "cache").glob("*.npy")
  assert np.load(npy, mmap_mode="r").shape == (12, 8, 8, 3)  # the corrupt file was dropped
  assert cached.num_bad == 1
  mtime = os.stat(npy).st_mtime_ns
  again = pipeline(ip.FolderSource(tmp_path / "imgs"), cache_dir=str(tmp_path / "cache"))
  assert os.stat(npy).st_mtime_ns == mtime
  np.testing.assert_array_equal(cached.batch(1)["image"], again.batch(1)["image"])
  # Same images as the uncached pipeline, though the order differs (12 vs 13 entries).
  assert {a.tobytes() for t in range(3) for a in plain.batch(t)["image"]} <= {
      a.tobytes() for a in np.load(npy).astype(np.float32) / 127.5 - 1}


def test_npz_source(tmp_path):
  images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
  np.savez(tmp_path / "d.npz", images=images)
  p = pipeline(ip.npz_source(tmp_path / "d.npz"), batch=3)
  x = p.batch(0)["image"]
  np.testing.assert_array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), images[p._indices(0)])
  np.savez(tmp_path / "bad.npz", pixels=images)
  with pytest.raises(DataError, match="no 'images' array"):
    ip.npz_source(tmp_path / "bad.npz")
  np.savez(tmp_path / "float.npz", images=images.astype(np.float32))
  with pytest.raises(DataError, match="uint8"):
    ip.npz_source(tmp_path / "float.npz")


def test_center140_crop_is_the_celeba64_protocol():
  image = np.zeros((218, 178, 3), np.uint8)  # CelebA aligned size (H=218, W=178)
  image[39:179, 19:159] = 255  # exactly the 140x140 centre box
  out = ip.preprocess(image, 64, 3, "center140")
  assert out.shape == (64, 64, 3) and out.min() == 255
  gray = ip.preprocess(Image.fromarray(image[..., 0]), 32, 3, "none")
  assert gray.shape == (32, 32, 3)
  assert ip.preprocess(image, 16, 1, "none").shape == (16, 16, 1)
  with pytest.raises(ConfigError, match="smaller than the 140x140 center crop"):
    ip.preprocess(np.zeros((64, 64, 3), np.uint8), 64, 3, "center140")


def test_fewer_images_than_a_batch_is_an_error():
  with pytest.raises(DataError, match="fewer than one batch"):
    pipeline(ip.SyntheticSource(3, 8, 3), batch=4)


def test_tfds_source_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  data = celeba.get_config().data  # the default: tfds celeb_a with the center140 crop
  with tfds.testing.mock_data(num_examples=10):
    source = ip.make_source(data, 64, 3)
    p = ip.ImagePipeline(source, global_batch_size=4, image_size=64, channels=3,
                         crop=data.crop, num_workers=2)
    x = p.batch(0)["image"]
  assert len(source) == 10 and x.shape == (4, 64, 64, 3) and np.isfinite(x).all()


def test_tfds_dataset_not_prepared_is_one_clear_line(tmp_path):
  data = ml_collections.ConfigDict(dict(source="tfds", name="mnist", split="train",
                                        data_dir=str(tmp_path), manual_dir="", download=False))
  with pytest.raises(DataError, match="is not prepared") as e:
    ip.make_source(data, 32, 1)
  assert "\n" not in str(e.value)


def test_real_celeba_zip(shared_data):
  path = shared_data / "celeba_udacity64" / "celeba_udacity64.zip"
  if not path.exists():
    pytest.skip(f"{path} is absent")
  source = ip.FolderSource(path)
  assert len(source) == 30_000
  p = ip.ImagePipeline(source, global_batch_size=16, image_size=64, channels=3, crop="none")
  x = p.batch(0)["image"]
  assert x.shape == (16, 64, 64, 3) and p.num_bad == 0
  assert 0.05 < x.std() < 0.9  # real faces, not blank images


def test_celeba_download_failure_explains_the_manual_route(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")

  class FailingBuilder:  # what a Google Drive quota failure looks like to us: an exception
    def download_and_prepare(self, **kwargs):
      assert kwargs["download_config"].manual_dir == str(tmp_path / "manual")
      raise RuntimeError("Failed to get url https://drive.google.com/uc?export=download: 403")

  monkeypatch.setattr(tfds, "builder", lambda *a, **k: FailingBuilder())
  data = ml_collections.ConfigDict(dict(source="tfds", name="celeb_a", split="train",
                                        data_dir=str(tmp_path), manual_dir=str(tmp_path / "manual"),
                                        download=True))
  with pytest.raises(DataError) as e:
    ip.make_source(data, 64, 3)
  message = str(e.value)
  assert "Google Drive" in message and "img_align_celeba.zip" in message
  assert "identity_CelebA.txt" in message and "data.manual_dir" in message
  assert "data.source=folder" in message and "\n" not in message
