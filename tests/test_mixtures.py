"""The 2-D mixture benchmark: data, the mode metrics, and experiments.toy end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import mixture_benchmark, mixtures
from jaxgan.checkpointing import Checkpointer
from jaxgan.errors import ConfigError
from jaxgan.models import MLPDiscriminator

from helpers import assert_run_saved_before_the_key_resumes_only_as
from test_celeba_program import run_cli


def test_mixtures_are_the_published_ones():
  ring, std = mixtures.mixture("ring")
  assert std == 0.01 and ring.shape == (8, 2)
  np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 1.0)
  assert len({tuple(np.round(m, 6)) for m in ring}) == 8  # 8 distinct angles, no repeated endpoint
  grid, std = mixtures.mixture("grid")
  assert std == 0.05 and grid.shape == (25, 2) and set(grid.ravel()) == {-4, -2, 0, 2, 4}
  points = np.asarray(mixtures.sample(jax.random.key(0), grid, std, 5000))
  perfect = mixtures.mode_metrics(points, grid, std)
  # True samples: all modes, HQ = P(|N(0, I_2)| <= 3) = 1 - exp(-4.5) = 98.9%, KL near 0.
  assert perfect["modes"] == 25 and perfect["reverse_kl"] < 0.01
  assert perfect["hq"] == pytest.approx(1 - np.exp(-4.5), abs=0.005)
  with pytest.raises(ValueError, match="unknown mixture 'spiral'"):
    mixtures.mixture("spiral")


def test_mode_metrics_of_collapsed_and_off_manifold_samples():
  ring, std = mixtures.mixture("ring")
  two_modes = np.concatenate([np.repeat(ring[:1], 30, 0), np.repeat(ring[1:2], 10, 0)])
  m = mixtures.mode_metrics(np.concatenate([two_modes, [[0.0, 0.0]] * 10]), ring, std)
  assert m["modes"] == 2 and m["hq"] == pytest.approx(0.8)
  p = np.array([0.75, 0.25])
  assert m["reverse_kl"] == pytest.approx(float(np.sum(p * np.log(8 * p))))
  assert mixtures.mode_metrics(np.zeros((5, 2)), ring, std) == {
      "modes": 0.0, "hq": 0.0, "reverse_kl": pytest.approx(np.log(8))}


def test_distance_profile_of_true_blurred_and_bridging_samples():
  grid, std = mixtures.mixture("grid")
  true = np.asarray(mixtures.sample(jax.random.key(1), grid, std, 20_000))
  p = mixtures.distance_profile(true, grid, std)
  # 2-D Gaussians: P(r <= b std) = 1 - exp(-b^2 / 2); nothing past 6 std.
  cdf = [1 - np.exp(-b ** 2 / 2) for b in p["bands"]] + [1.0]
  np.testing.assert_allclose(np.cumsum(p["fractions"]), cdf, atol=0.01)
  assert p["spread"] == pytest.approx(1.0, abs=0.03)
  blurred = np.asarray(mixtures.sample(jax.random.key(1), grid, 2 * std, 20_000))
  assert mixtures.distance_profile(blurred, grid, std)["spread"] == pytest.approx(2.0, abs=0.1)
  bridges = (grid[:-1] + grid[1:]) / 2  # midway between neighbours: 20 std from both
  p = mixtures.distance_profile(np.concatenate([bridges, grid[:8]]), grid, std)
  assert p["fractions"] == [pytest.approx(8 / 32), 0, 0, 0, 0, pytest.approx(24 / 32)]
  assert np.isnan(p["spread"])  # no mode has 10 samples near it


def test_maxout_discriminator_takes_the_max_of_its_pieces():
  d = MLPDiscriminator(hidden_dims=(3,), maxout=5)
  params = d.init(jax.random.key(0), np.zeros((1, 2)))
  assert params["params"]["Dense_0"]["kernel"].shape == (2, 15)


def test_toy_program_trains_every_seed_and_writes_results(tmp_path):
  r = run_cli("experiments.toy", "--config=experiments/configs/toy.py:smoke",
              f"--workdir={tmp_path}", "--config.pack=2", "--config.num_seeds=3")
  assert r.returncode == 0, r.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["num_seeds"] == 3 and len(results["per_seed"]) == 3
  assert "(mean of 3 seeds) -> " in r.stdout, r.stdout
  assert results["config"]["pack"] == 2 and results["num_modes"] == 8
  for key in ("modes", "hq", "reverse_kl"):
    assert results[key] == pytest.approx(np.mean([s[key] for s in results["per_seed"]]))
  logged = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [e["step"] for e in logged] == [20, 40]
  d_losses = logged[-1]["per_seed_losses"]["d_loss"]
  assert len(d_losses) == 3 and len(set(d_losses)) == 3  # independent seeds, not one run thrice
  assert logged[-1]["d_loss"] == pytest.approx(np.mean(d_losses))
  assert (tmp_path / "samples_seed0.png").stat().st_size > 0
  # --profile: the run's own config (the flags' --config is ignored), its newest checkpoint.
  prof = run_cli("experiments.toy", f"--workdir={tmp_path}", "--profile", "--profile_samples=400")
  assert prof.returncode == 0, prof.stderr[-2000:]
  assert "ring at step 40, 400 samples per seed" in prof.stdout
  p = json.loads((tmp_path / "profile.json").read_text())
  assert p["step"] == 40 and len(p["per_seed"]) == 3
  for s in p["per_seed"]:
    assert sum(s["fractions"]) == pytest.approx(1.0)
    assert s["hq"] == pytest.approx(sum(s["fractions"][:2]))  # HQ: within 3 std
  # --drs: each seed's D calibrated, then its samples filtered; unfiltered ones beside them.
  drs = run_cli("experiments.toy", f"--workdir={tmp_path}", "--drs", "--drs_steps=20",
                "--drs_samples=200")
  assert drs.returncode == 0, drs.stderr[-2000:]
  assert "G + DRS (accepts" in drs.stdout
  d = json.loads((tmp_path / "drs.json").read_text())
  assert d["step"] == 40 and d["num_samples"] == 200 and len(d["per_seed"]) == 3
  assert 0 < d["acceptance"] <= 1 and d["calibration"]["steps"] == 20
  assert d["unfiltered"]["hq"] == pytest.approx(
      np.mean([s["unfiltered"]["hq"] for s in d["per_seed"]]))
  assert "error: --profile and --drs each read" in run_cli(
      "experiments.toy", f"--workdir={tmp_path}", "--profile", "--drs").stderr
  assert "error: no checkpoints in" in run_cli("experiments.toy", f"--workdir={tmp_path / 'e'}",
                                               "--profile").stderr
  assert not (tmp_path / "e").exists()  # nothing made where there was no run
  other = tmp_path / "other"  # checkpoints of another program (its config has no mixture)
  ck = Checkpointer(other / "checkpoints", asynchronous=False)
  ck.save(1, {"w": np.zeros(2)}, {"config": {"num_steps": 1}})
  ck.close()
  with pytest.raises(ConfigError, match="holds no run of experiments.toy"):
    mixture_benchmark.profile(other)
  bad = run_cli("experiments.toy", "--config=experiments/configs/toy.py:smoke",
                f"--workdir={tmp_path / 'b'}", "--config.eval_every=30")
  assert bad.returncode == 2 and "must be a multiple of config.eval_every=30" in bad.stderr


def test_seed_streams_are_distinct_and_do_not_depend_on_num_seeds():
  three, ten = mixture_benchmark.seed_streams(0, 3), mixture_benchmark.seed_streams(0, 10)
  assert set(ten) == set(mixture_benchmark.STREAMS)
  for name in mixture_benchmark.STREAMS:
    np.testing.assert_array_equal(jax.random.key_data(three[name]),
                                  jax.random.key_data(ten[name])[:3])
  every_key = np.concatenate([jax.random.key_data(k) for k in ten.values()])
  assert len({tuple(k) for k in every_key.tolist()}) == 10 * len(mixture_benchmark.STREAMS)


def test_minibatch_key_choices_and_runs_saved_before_the_option(tmp_path):
  """Runs saved before `minibatch_key` drew their minibatches from the step's key: they
  resume only as "step", and the default ("own") refuses them in one line."""
  from experiments.configs import toy
  c = toy.get_config("smoke")
  c.minibatch_key = "shared"
  with pytest.raises(ConfigError, match="config.minibatch_key='shared' is unknown; choose one of "
                                        "own, step"):
    mixture_benchmark.validate_config(c)
  c.minibatch_key = "own"
  assert_run_saved_before_the_key_resumes_only_as(tmp_path, c, "minibatch_key", "step")


def test_simultaneous_option_reaches_the_state_and_older_runs_resume_without_it(tmp_path):
  """`--config.simultaneous` (PacGAN's released update order) reaches every seed's state; runs
  saved before the option alternated, and resume as simultaneous=False only."""
  from experiments.configs import toy
  c = toy.get_config("smoke")
  assert c.simultaneous is False
  c.simultaneous = True
  state = mixture_benchmark.make_state(c, jax.random.key(0))
  assert state.simultaneous and state.reuse_fake
  c.n_critic = 2
  with pytest.raises(ConfigError, match="simultaneous=True with n_critic=2"):
    mixture_benchmark.init_states(c, mixture_benchmark.seed_streams(0, 1))
  c.n_critic = 1
  assert_run_saved_before_the_key_resumes_only_as(tmp_path, c, "simultaneous", False)


def test_g_steps_reaches_every_programs_state_and_older_runs_resume_with_one(tmp_path):
  """`--config.g_steps` (G updates per step) reaches the state in all three programs, bad
  values are refused in one line, and runs saved before the key resume as g_steps=1 only."""
  import pathlib

  from experiments.configs import celeba, stacked_mnist as stacked_config, toy
  from jaxgan import stacked_mnist, trainer
  key = jax.random.key(0)
  c = toy.get_config("smoke")
  assert c.g_steps == 1
  c.g_steps = 0
  with pytest.raises(ConfigError, match="config.g_steps must be a positive integer, got 0"):
    mixture_benchmark.validate_config(c)
  c.g_steps = 2
  assert mixture_benchmark.make_state(c, key).g_steps == 2
  assert_run_saved_before_the_key_resumes_only_as(tmp_path / "toy", c, "g_steps", 1)
  s = stacked_config.get_config("smoke")
  s.g_steps, s.classifier_dir = 2, "unused"
  stacked_mnist.validate_config(s)
  assert stacked_mnist.make_state(s, key).g_steps == 2
  assert_run_saved_before_the_key_resumes_only_as(tmp_path / "stacked", s, "g_steps", 1,
                                                  stacked_mnist.ADDED_KEYS)
  m = celeba.get_config("smoke")
  saved = json.loads(m.to_json())
  m.g_steps = 2
  assert trainer.create_state_from_config(m, key).g_steps == 2
  with pytest.raises(ConfigError, match="config.g_steps=1, not 2; resume with the same"):
    trainer._check_compatible(saved, m, pathlib.Path("w"))
  del saved["g_steps"]  # a CelebA run saved before the key ran one G update per step
  with pytest.raises(ConfigError, match="config.g_steps=1, not 2; resume with the same"):
    trainer._check_compatible(saved, m, pathlib.Path("w"))
  m.g_steps = 1
  trainer._check_compatible(saved, m, pathlib.Path("w"))
  m.g_steps = 0
  with pytest.raises(ConfigError, match="config.g_steps must be an integer >= 1, got 0"):
    trainer.validate_config(m)


def test_best_variants_are_the_baseline_with_the_best_settings():
  from experiments.configs import toy
  for mixture, settings in (("ring", toy.BEST), ("grid", toy.GRID_BEST)):
    base, best = toy.get_config(mixture).to_dict(), toy.get_config(f"{mixture}-best").to_dict()
    assert best["mixture"] == mixture
    assert {k: v for k, v in best.items() if base[k] != v} == settings
  assert toy.GRID_BEST == {**toy.BEST, "d_lr": 8e-4, "num_steps": 200_000}
  with pytest.raises(ValueError, match="unknown config variant 'ring-worst'; use toy.py:ring"):
    toy.get_config("ring-worst")


def test_toy_program_resumes_where_it_stopped(tmp_path):
  """Stopped at step 20 and rerun to 40, the seeds end where a straight 40-step run ends;
  a metrics line written after the last checkpoint is computed again, not kept twice."""
  from experiments.configs import toy
  c = toy.get_config("smoke")
  straight = mixture_benchmark.run(c, tmp_path / "straight")
  c.num_steps = 20
  mixture_benchmark.run(c, tmp_path / "resumed")
  with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "written": "after the last checkpoint"}\n')
  c.num_steps = 40
  resumed = mixture_benchmark.run(c, tmp_path / "resumed")
  assert resumed["per_seed"] == straight["per_seed"]
  lines = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
  expected = [json.loads(l) for l in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
  assert [e["step"] for e in lines] == [20, 40]
  for got, want in zip(lines, expected):
    assert got["per_seed"] == want["per_seed"]
    np.testing.assert_allclose(got["per_seed_losses"]["d_loss"], want["per_seed_losses"]["d_loss"],
                               rtol=1e-6)
  again = mixture_benchmark.run(c, tmp_path / "resumed")  # complete: the same results, no training
  assert again["per_seed"] == straight["per_seed"] and again["seconds"] == resumed["seconds"]
  c.pack = 2
  with pytest.raises(ConfigError, match=r"config.pack=1, not 2; resume with the same settings"):
    mixture_benchmark.run(c, tmp_path / "resumed")
  c.pack, c.num_steps = 1, 20
  with pytest.raises(ConfigError, match="holds a run at step 40; config.num_steps=20"):
    mixture_benchmark.run(c, tmp_path / "resumed")
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "results.json").write_text("{}")
  with pytest.raises(ConfigError, match="results of a run without checkpoints"):
    mixture_benchmark.run(c, tmp_path / "old")
  assert (tmp_path / "old" / "results.json").read_text() == "{}"


def test_pool_reports_runs_of_other_seeds_as_one(tmp_path):
  """Runs of one config with different config.seed pool into one results.json whose seeds are
  theirs; runs that differ otherwise, share a seed, or are unfinished are refused in one line,
  and a folder holding a run is never overwritten."""
  from experiments.configs import toy
  c = toy.get_config("smoke")
  c.num_seeds = 2
  a = mixture_benchmark.run(c, tmp_path / "a")
  c.seed, c.num_seeds, c.eval_every = 1, 1, 40
  b = mixture_benchmark.run(c, tmp_path / "b")
  r = run_cli("experiments.toy", f"--workdir={tmp_path / 'ab'}",
              f"--pool={tmp_path / 'a'},{tmp_path / 'b'}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "(mean of 3 seeds of 2 runs)" in r.stdout
  pooled = json.loads((tmp_path / "ab" / "results.json").read_text())
  assert pooled["per_seed"] == a["per_seed"] + b["per_seed"] and pooled["num_seeds"] == 3
  for key in ("modes", "hq", "reverse_kl"):
    assert pooled[key] == pytest.approx(np.mean([s[key] for s in pooled["per_seed"]]))
  assert [(p["seed"], p["num_seeds"]) for p in pooled["pooled_from"]] == [(0, 2), (1, 1)]
  assert pooled["seconds"] == pytest.approx(a["seconds"] + b["seconds"], abs=0.1)
  assert "seed" not in pooled["config"] and pooled["config"]["num_steps"] == c.num_steps

  def refused(dirs, out="out"):
    with pytest.raises(ConfigError) as e:
      mixture_benchmark.pool([tmp_path / d for d in dirs], tmp_path / out)
    return str(e.value)

  assert "pooling needs at least two run folders, got 1" in refused(["a"])
  assert "both have config.seed=0, so they trained the same seeds" in refused(["a", "a"])
  assert "has no results.json: pool finished runs" in refused(["a", "missing"])
  assert "holds pooled results; pool the runs it names instead" in refused(["ab", "b"])
  assert "holds a run of its own; give the pooled results a new folder" in refused(["a", "b"], "b")
  assert (tmp_path / "b" / "results.json").read_text() == json.dumps(b, indent=2) + "\n"
  c.seed, c.pack = 2, 2
  mixture_benchmark.run(c, tmp_path / "c")
  assert "differs from" in refused(["a", "c"]) and "in config.pack (2, not 1)" in refused(["a", "c"])
  assert not (tmp_path / "out").exists()


def test_latent_distribution_reaches_every_programs_state_and_older_runs_resume_as_normal(
    tmp_path):
  """`--config.latent_distribution=uniform` (z ~ U(-1, 1)) reaches the state in all three
  programs and the CelebA program's fixed noise, interpolations and evaluation noise; unknown
  values are refused in one line; runs saved before the key drew N(0, I) and resume so only."""
  import pathlib

  from experiments.configs import celeba, stacked_mnist as stacked_config, toy
  from jaxgan import evaluation, stacked_mnist, trainer
  key = jax.random.key(0)
  c = toy.get_config("smoke")
  assert c.latent_distribution == "normal"
  c.latent_distribution = "gaussian"
  with pytest.raises(ConfigError, match="config.latent_distribution='gaussian' is unknown; "
                                        "choose one of normal, uniform"):
    mixture_benchmark.validate_config(c)
  c.latent_distribution = "uniform"
  assert mixture_benchmark.make_state(c, key).latent_distribution == "uniform"
  assert_run_saved_before_the_key_resumes_only_as(tmp_path / "toy", c, "latent_distribution",
                                                  "normal")
  s = stacked_config.get_config("smoke")
  s.latent_distribution, s.classifier_dir = "gaussian", "unused"
  with pytest.raises(ConfigError, match="config.latent_distribution='gaussian' is unknown"):
    stacked_mnist.validate_config(s)
  s.latent_distribution = "uniform"
  assert stacked_mnist.make_state(s, key).latent_distribution == "uniform"
  assert_run_saved_before_the_key_resumes_only_as(tmp_path / "stacked", s, "latent_distribution",
                                                  "normal", stacked_mnist.ADDED_KEYS)

  m = celeba.get_config("smoke")
  saved = json.loads(m.to_json())
  del saved["latent_distribution"]  # a CelebA run saved before the key drew N(0, I)
  m.latent_distribution = "uniform"
  trainer.validate_config(m)
  assert trainer.create_state_from_config(m, key).latent_distribution == "uniform"
  with pytest.raises(ConfigError, match="config.latent_distribution='normal', not 'uniform'; "
                                        "resume with the same"):
    trainer._check_compatible(saved, m, pathlib.Path("w"))
  for z in (trainer.sample_noise(m), evaluation.evaluation_noise(0, 0, 256, m.latent_dim,
                                                                 "uniform"),
            trainer.interpolation_latents(key, 4, 8, m.latent_dim, "uniform")):
    assert float(jnp.min(z)) >= -1.0 and float(jnp.max(z)) <= 1.0 and float(jnp.std(z)) > 0.4
  line = trainer.interpolation_latents(key, 1, 5, m.latent_dim, "uniform")
  np.testing.assert_allclose(line[2], (line[0] + line[4]) / 2, atol=1e-6)  # a straight line
  assert float(jnp.max(jnp.abs(evaluation.evaluation_noise(0, 0, 256, m.latent_dim)))) > 2.0
  # The sample and evaluate programs read a run's saved config: an older one draws N(0, I).
  m.latent_distribution = "normal"
  checkpoints = Checkpointer(tmp_path / "celeba" / "checkpoints", asynchronous=False)
  checkpoints.save(1, trainer.create_state_from_config(m, key), {"config": saved})
  checkpoints.close()
  checkpoints, config = trainer._open_checkpoints(tmp_path / "celeba", None)
  checkpoints.close()
  assert config.latent_distribution == "normal"
  m.latent_distribution = "gaussian"
  with pytest.raises(ConfigError, match="config.latent_distribution='gaussian' is unknown"):
    trainer.validate_config(m)
