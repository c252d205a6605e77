"""Scores, the Inception network and its weights: properties that need no PyTorch.

Agreement with pytorch-fid / torch-fidelity themselves is in test_fid_exactness.py.
"""

import io
import os
import pathlib
import pickle
import zipfile

import jax
import numpy as np
import pytest
import scipy.linalg

from jaxgan import metrics
from jaxgan.errors import ConfigError
from jaxgan.metrics import inception, weights

from feature_nets import TinyConvNet, tiny


def random_covariance(rng, d, n):
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
  return x.mean(0), np.cov(x, rowvar=False)


def test_frechet_distance_matches_the_closed_forms():
  rng = np.random.default_rng(0)
  mu1, s1 = random_covariance(rng, 64, 500)
  mu2, s2 = random_covariance(rng, 64, 500)
  assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
      metrics.frechet_distance(mu2, s2, mu1, s1), rel=1e-10)
  # Diagonal covariances: sum of (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2.
  v1, v2 = rng.uniform(0.1, 2, 64), rng.uniform(0.1, 2, 64)
  expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
  assert metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected,
                                                                                       rel=1e-10)
  # Full covariances: the trace term against scipy's Schur-based sqrtm.
  reference = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
  assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-9)


def test_fid_statistics_refuse_too_few_samples_but_kid_works():
  rng = np.random.default_rng(0)
  few = rng.normal(size=(100, 2048)).astype(np.float32)
  with pytest.raises(ConfigError, match="FID needs at least 2,048 samples.*KID"):
    metrics.feature_statistics(few)
  mean, std = metrics.kernel_inception_distance(few, few + 0.5, num_subsets=3)
  assert mean > 0 and np.isfinite(std)
  with pytest.raises(ConfigError, match="must be a float array"):
    metrics.feature_statistics(np.zeros(10))
  with pytest.raises(ConfigError, match="NaN"):
    metrics.kernel_inception_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 400, 32)).astype(np.float32)
  same, _ = metrics.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
  shifted, _ = metrics.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
  assert abs(same) < 0.02 < shifted


def test_inception_score_of_known_distributions():
  assert metrics.inception_score(np.zeros((100, 1008)), splits=10)[0] == pytest.approx(1.0)
  confident = np.full((50, 5), -1e4)
  confident[np.arange(50), np.arange(50) % 5] = 0.0  # each sample sure, classes balanced
  mean, std = metrics.inception_score(confident, splits=2)
  assert mean == pytest.approx(5.0, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
  with pytest.raises(ConfigError, match="splits"):
    metrics.inception_score(np.zeros((5, 3)), splits=10)


def test_precision_recall_of_identical_disjoint_and_nested_sets():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(300, 8)).astype(np.float32)
  assert metrics.precision_recall(real, real) == (1.0, 1.0)
  assert metrics.precision_recall(real, real + 100.0) == (0.0, 0.0)
  # Fakes collapsed onto a few real points: all realistic (precision 1), little coverage.
  precision, recall = metrics.precision_recall(real, np.repeat(real[:5], 20, axis=0), block_size=64)
  assert precision == 1.0 and recall < 0.2


def test_fid_inception_shapes_any_size_and_channels():
  module = inception.FIDInceptionV3()
  shapes = inception.variable_shapes(module)
  n_params = sum(np.prod(s.shape) for s in jax.tree.leaves(shapes["params"]))
  assert n_params == 23_850_960  # as torch counts pytorch-fid's fid_inception_v3()
  variables = jax.tree.map(lambda s: np.full(s.shape, 0.01, s.dtype), shapes)
  for shape in ((2, 32, 32, 3), (1, 28, 28, 1)):
    out = jax.jit(module.apply)(variables, np.zeros(shape, np.uint8))
    assert out["pool3"].shape == (shape[0], 2048) and out["logits"].shape == (shape[0], 1008)


def test_resize_matrix_is_pytorch_bilinear_without_antialiasing():
  assert np.array_equal(inception.resize_matrix(299, 299), np.eye(299, dtype=np.float32))
  up = inception.resize_matrix(2, 4)  # src = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25
  np.testing.assert_allclose(up, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  down = inception.resize_matrix(8, 2)  # src = 1.5, 5.5: two taps each, no wider filter
  np.testing.assert_allclose(down[0], [0, 0.5, 0.5, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(inception.resize_matrix(64, 299).sum(1), 1.0, rtol=1e-6)


def test_images_must_be_uint8():
  with pytest.raises(ConfigError, match="uint8.*to_uint8"):
    metrics.check_images(np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(ConfigError, match="C = 1 or 3"):
    metrics.check_images(np.zeros((2, 8, 8, 4), np.uint8))
  x = np.array([-1.0, -0.999, 0.0, 1.0, 2.0])
  np.testing.assert_array_equal(metrics.to_uint8(x), [0, 0, 128, 255, 255])


def test_batched_features_are_the_same_on_one_and_eight_devices():
  net8 = tiny()  # batches of 32 over all 8 devices
  module = TinyConvNet()
  variables = module.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.uint8))
  net1 = metrics.ModuleFeatures("tiny", module, variables, logits_key="logits", batch_size=16,
                                devices=jax.local_devices()[:1])
  images = np.random.default_rng(0).integers(0, 256, (37, 32, 32, 3), dtype=np.uint8)
  a, b = net8(images), net1(images)
  assert len(jax.local_devices()) == 8 and a["features"].shape == (37, 16)
  np.testing.assert_allclose(a["features"], b["features"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-6, atol=1e-7)
  assert net8.digest == net1.digest


# ----------------------------------------------------------------------------- weights files


def test_weights_missing_offline_is_one_line_naming_the_file(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXGAN_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  with pytest.raises(ConfigError) as e:
    weights.locate(download=False)
  message = str(e.value)
  assert "\n" not in message and weights.FID_WEIGHTS_NAME in message and str(tmp_path) in message

  def offline(*args, **kwargs):
    raise OSError("Network is unreachable")

  monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
  with pytest.raises(ConfigError, match="could not be downloaded.*Network is unreachable"):
    metrics.InceptionFeatures()
  with pytest.raises(ConfigError, match="does not exist"):
    metrics.InceptionFeatures(tmp_path / "nope.pth")


def test_a_download_with_the_wrong_checksum_is_refused_and_removed(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXGAN_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"x" * 1000))
  with pytest.raises(ConfigError, match="sha256.*substituted"):
    weights.locate()
  assert not list(tmp_path.iterdir())


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
  with pytest.raises(ConfigError, match="refusing to load .*system") as e:
    weights.read_torch_file(path, use_torch=False)
  assert "\n" not in str(e.value) and not marker.exists()
  (tmp_path / "junk.pth").write_bytes(b"not a torch file")
  with pytest.raises(ConfigError, match="cannot read .* as a PyTorch weights file"):
    weights.read_torch_file(tmp_path / "junk.pth", use_torch=False)


def test_state_dict_problems_name_the_tensor():
  shapes = inception.variable_shapes()
  state = {}
  for path, s in jax.tree.leaves_with_path(shapes):
    collection, *mods, leaf = [k.key for k in path]
    name = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
            "var": "running_var"}[leaf]
    shape = s.shape[::-1] if leaf == "kernel" and len(s.shape) == 2 else (
        (s.shape[3], s.shape[2], s.shape[0], s.shape[1]) if leaf == "kernel" else s.shape)
    state[".".join(mods) + "." + name] = np.zeros(shape, np.float32)
  variables = inception.variables_from_state_dict(state)
  assert jax.tree.structure(variables) == jax.tree.structure(shapes)
  broken = dict(state)
  del broken["Mixed_6b.branch7x7_2.conv.weight"]
  with pytest.raises(ConfigError, match="missing.*Mixed_6b.*branch7x7_2.*conv.*kernel"):
    inception.variables_from_state_dict(broken)
  broken = dict(state, **{"fc.weight": np.zeros((1000, 2048), np.float32)})
  with pytest.raises(ConfigError, match="shape"):
    inception.variables_from_state_dict(broken)
  with pytest.raises(ConfigError, match="unexpected tensor 'AuxLogits.fc.blah'"):
    inception.variables_from_state_dict(dict(state, **{"AuxLogits.fc.blah": np.zeros(1)}))
