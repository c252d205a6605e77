"""Evaluation in the training program (eval_every, best checkpoint) and experiments.evaluate."""

import json
import logging
import pathlib

import jax
import numpy as np
import pytest

from jaxgan import evaluation, trainer
from jaxgan.checkpointing import Checkpointer
from jaxgan.errors import ConfigError

from feature_nets import tiny
from test_celeba_program import run_cli, smoke

TINY = "feature_nets:tiny"  # importable: tests/ is on sys.path here, and on the CLI's PYTHONPATH


def eval_config(tmp_path, **overrides):
  return smoke(num_steps=6, eval_every=3, **{"eval.features": TINY, "eval.num_samples": 48,
                                             "eval.num_reference": 64, "eval.kid_subsets": 4,
                                             "eval.cache_dir": str(tmp_path / "cache"),
                                             **overrides})


def test_training_evaluates_logs_and_keeps_the_best_checkpoint(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  workdir = tmp_path / "run"
  trainer.train(eval_config(tmp_path), workdir)
  results = {s: json.loads((workdir / "eval" / f"{s}.json").read_text()) for s in (3, 6)}
  for step, r in results.items():
    assert r["step"] == step and r["skipped"] == {}
    assert set(r["metrics"]) == {"fd_tiny", "kd_tiny", "kd_tiny_std", "score_tiny",
                                 "score_tiny_std", "precision_tiny", "recall_tiny"}
    p = r["protocol"]
    assert p["is_fid"] is False and "not FID" in p["note"] and p["num_samples"] == 48
    assert p["reference"]["num_images"] == 64 and p["reference"]["crop"] == "none"
  best = json.loads((workdir / "eval" / "best.json").read_text())
  fds = {s: r["metrics"]["fd_tiny"] for s, r in results.items()}
  assert best["metric"] == "fd_tiny" and best["value"] == min(fds.values())
  assert best["step"] == min(fds, key=fds.get)
  best_dir = Checkpointer(workdir / "best", read_only=True)
  assert best_dir.all_steps() == [best["step"]]
  assert best_dir.restore_meta()["metric"] == "fd_tiny"
  assert "computing reference features of 64 images" in caplog.text

  # The program scores a checkpoint the same way: same noise, same network, cached reference.
  r = run_cli("experiments.evaluate", f"--workdir={workdir}", f"--features={TINY}",
              env={"PYTHONPATH": str(pathlib.Path(__file__).parent)})
  assert r.returncode == 0, r.stderr[-2000:]
  assert "from the cache" in r.stderr and "eval step 6: fd_tiny" in r.stdout
  again = json.loads((workdir / "eval" / "6.json").read_text())
  for k, v in results[6]["metrics"].items():
    assert again["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k

  # With --drs it scores the samples rejection sampling keeps, in a file of its own.
  plain = (workdir / "eval" / "6.json").read_text()
  r = run_cli("experiments.evaluate", f"--workdir={workdir}", f"--features={TINY}", "--drs",
              "--drs_steps=3", "--drs_real=32", "--drs_batch_size=8", "--drs_candidates=64",
              env={"PYTHONPATH": str(pathlib.Path(__file__).parent)})
  assert r.returncode == 0, r.stderr[-2000:]
  assert "DRS: calibrated D on 32 real images for 3 steps" in r.stdout
  assert "eval step 6: fd_tiny" in r.stdout and "eval/6-drs.json" in r.stdout
  drs = json.loads((workdir / "eval" / "6-drs.json").read_text())
  p = drs["protocol"]
  assert p["num_samples"] == 48 and "rejection sampling" in p["sampler"]
  assert p["drs"]["real_images"] == 32 and p["drs"]["calibration_steps"] == 3
  assert 48 <= p["drs"]["accepted"] <= p["drs"]["candidates"]
  assert set(drs["metrics"]) == set(results[6]["metrics"])
  assert drs["metrics"]["fd_tiny"] != again["metrics"]["fd_tiny"]  # other samples
  assert (workdir / "eval" / "6.json").read_text() == plain  # the plain evaluation stays


def test_too_few_samples_skip_the_frechet_distance_with_the_reason(tmp_path):
  config = eval_config(tmp_path, **{"eval.num_samples": 10})
  net = tiny()
  evaluator = evaluation.Evaluator(config, network=net)
  state = trainer.create_state_from_config(config, jax.random.key(0))
  result = evaluator(lambda z: jax.jit(trainer.generate)(state, z), step=0)
  assert "fd_tiny" not in result["metrics"] and "needs at least 16" in result["skipped"]["fd_tiny"]
  assert np.isfinite(result["metrics"]["kd_tiny"])
  assert result["protocol"]["kid"]["subset_size"] == 10


def test_bad_eval_settings_fail_before_training(tmp_path):
  with pytest.raises(ConfigError, match="config.eval.num_samples must be a positive integer"):
    trainer.train(eval_config(tmp_path, **{"eval.num_samples": 0}), tmp_path / "a")
  with pytest.raises(ConfigError, match="unknown feature network 'vgg'"):
    trainer.train(eval_config(tmp_path, **{"eval.features": "vgg"}), tmp_path / "b")
  assert not (tmp_path / "b" / "checkpoints").exists()


def test_fid_without_weights_offline_is_one_line(tmp_path):
  trainer.train(smoke(num_steps=2), tmp_path / "run")
  r = run_cli("experiments.evaluate", f"--workdir={tmp_path / 'run'}", "--nodownload")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith("error: the FID Inception weights "
                                                      "pt_inception-2015-12-05-6726825d.pth are not")
  assert "Traceback" not in r.stderr
