"""Our FID Inception, FID, KID, IS and precision/recall against pytorch-fid and torch-fidelity.

The real Inception weights cannot be downloaded here, so pytorch-fid's own
network gets random weights of the right shapes, saved as a .pth (both PyTorch
file formats); ours loads that file and both see the same images. Needs the
`fidcheck` extra (torch, torchvision, pytorch-fid, torch-fidelity), which
`.ci/run` installs; skipped without it.
"""

import collections

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the fidcheck extra is not installed: "
                            "pip install -e '.[fidcheck]'")
pfi = pytest.importorskip("pytorch_fid.inception", reason="pytorch-fid (fidcheck extra) missing")
fid_score = pytest.importorskip("pytorch_fid.fid_score")
metric_kid = pytest.importorskip("torch_fidelity.metric_kid", reason="torch-fidelity missing")
metric_isc = pytest.importorskip("torch_fidelity.metric_isc")
metric_prc = pytest.importorskip("torch_fidelity.metric_prc")

from jaxgan import metrics  # noqa: E402
from jaxgan.metrics import inception, weights  # noqa: E402


def random_fid_state_dict(seed=0):
  """Random tensors with the names and shapes of pytorch-fid's FID Inception state dict.

  He-scaled conv weights, BatchNorm scales/biases/running statistics away from
  their defaults (so folding mistakes show), a small fc.
  """
  rng = np.random.default_rng(seed)
  state = collections.OrderedDict()
  for path, s in jax.tree.leaves_with_path(inception.variable_shapes()):
    _, *mods, leaf = [k.key for k in path]
    mod = ".".join(mods)
    if leaf == "kernel" and len(s.shape) == 4:
      kh, kw, cin, cout = s.shape
      state[mod + ".weight"] = rng.normal(0, np.sqrt(2 / (kh * kw * cin)), (cout, cin, kh, kw))
    elif leaf == "kernel":
      state[mod + ".weight"] = rng.normal(0, 0.02, s.shape[::-1])
    elif leaf == "scale":
      state[mod + ".weight"] = rng.uniform(0.5, 1.5, s.shape)
    elif leaf == "bias":
      state[mod + ".bias"] = rng.normal(0, 0.1, s.shape)
    elif leaf == "mean":
      state[mod + ".running_mean"] = rng.normal(0, 0.1, s.shape)
    else:
      state[mod + ".running_var"] = rng.uniform(0.5, 1.5, s.shape)
      state[mod + ".num_batches_tracked"] = np.array(123)
  return collections.OrderedDict(
      (k, torch.from_numpy(v.astype(np.float32) if v.dtype == np.float64 else v))
      for k, v in state.items())


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
  directory = tmp_path_factory.mktemp("fid_weights")
  state = random_fid_state_dict()
  paths = {"zip": directory / "random_zip.pth", "legacy": directory / "random_legacy.pth"}
  torch.save(state, paths["zip"])
  torch.save(state, paths["legacy"], _use_new_zipfile_serialization=False)
  return state, paths


def test_both_readers_rebuild_torch_files_exactly(random_weights):
  state, paths = random_weights
  for path in paths.values():
    for use_torch in (False, True):
      loaded = weights.read_torch_file(path, use_torch=use_torch)
      assert list(loaded) == list(state)
      for key, tensor in state.items():
        assert loaded[key].dtype == tensor.numpy().dtype, key
        np.testing.assert_array_equal(loaded[key], tensor.numpy())


def test_pool3_features_and_logits_match_pytorch_fid(random_weights, monkeypatch, tmp_path):
  state, paths = random_weights
  monkeypatch.setenv("JAXGAN_CACHE_DIR", str(tmp_path))
  # pytorch-fid's network exactly as it builds it, with our random file instead of the download.
  monkeypatch.setattr(pfi, "load_state_dict_from_url",
                      lambda *a, **k: torch.load(paths["zip"], weights_only=True))
  reference = pfi.InceptionV3([pfi.InceptionV3.DEFAULT_BLOCK_INDEX]).eval()
  fc = pfi.fid_inception_v3().fc.eval()
  ours = metrics.InceptionFeatures(paths["legacy"], batch_size=8)
  assert not ours.is_fid  # random weights: not the official file
  assert list(tmp_path.glob("fid_inception-*.npz"))  # converted once, cached without pickle

  rng = np.random.default_rng(0)
  for shape in ((5, 64, 64, 3), (2, 333, 320, 3), (2, 28, 28, 1)):
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    with torch.no_grad():  # pytorch-fid's input: ToTensor (x / 255), RGB
      x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
      pool3 = reference(x.repeat(1, 3 // shape[-1], 1, 1))[0][:, :, 0, 0]
      logits = fc(pool3)
    out = ours(images)
    for name, expected in (("pool3", pool3.numpy()), ("logits", logits.numpy())):
      error = np.abs(out[name] - expected).max() / np.abs(expected).max()
      assert error < 1e-4, (shape, name, error)

  monkeypatch.setattr(weights, "read_torch_file", None)  # the second load reads the .npz only
  again = metrics.InceptionFeatures(paths["legacy"], batch_size=8)
  np.testing.assert_array_equal(again(images)["pool3"], out["pool3"])


def test_frechet_distance_equals_pytorch_fid():
  rng = np.random.default_rng(0)
  d = 1024
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  f1 = rng.normal(size=(1500, d)) @ mix + 0.1
  f2 = rng.normal(size=(1500, d)) @ (mix + 0.1 * rng.normal(size=(d, d)) / np.sqrt(d))
  s1, s2 = metrics.feature_statistics(f1), metrics.feature_statistics(f2)
  ours = metrics.frechet_distance(*s1, *s2)
  expected = fid_score.calculate_frechet_distance(*s1, *s2)
  assert ours == pytest.approx(expected, rel=1e-6)
  assert np.allclose(s1[1], np.cov(f1, rowvar=False)) and np.allclose(s1[0], f1.mean(0))


def test_kid_is_and_precision_recall_equal_torch_fidelity():
  rng = np.random.default_rng(1)
  fake = rng.normal(size=(600, 256))
  real = rng.normal(size=(700, 256)) * 1.1 + 0.05
  mean, std = metrics.kernel_inception_distance(fake, real, num_subsets=10, subset_size=300)
  expected = metric_kid.kid_features_to_metric(
      torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=10, kid_subset_size=300,
      rng_seed=2020, verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3,
      kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
  assert mean == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-5)
  assert std == pytest.approx(expected["kernel_inception_distance_std"], rel=1e-3)

  logits = rng.normal(size=(1000, 1008)) * 3
  expected = metric_isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
  assert metrics.inception_score(logits, splits=10) == pytest.approx(
      (expected["inception_score_mean"], expected["inception_score_std"]), rel=1e-9)

  precision, recall = metrics.precision_recall(real[:, :32], fake[:, :32] * 1.3, k=3,
                                               block_size=256)
  expected = metric_prc.calculate_precision_recall_full(
      torch.from_numpy(fake[:, :32] * 1.3), torch.from_numpy(real[:, :32]), 3, 10000)
  assert (precision, recall) == pytest.approx(expected, abs=1e-6)
  assert 0 < precision < 1 and 0 < recall < 1
