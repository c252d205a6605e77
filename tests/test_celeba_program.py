"""The training program end to end: what it leaves in the workdir, resume, CLI errors, sampling."""

import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments.configs import celeba
from jaxgan import trainer
from jaxgan.checkpointing import Checkpointer
from jaxgan.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cli(module, *args, timeout=300, env=None):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env={**os.environ, **(env or {})})


def smoke(**overrides):
  config = celeba.get_config("smoke")
  config.update_from_flattened_dict(overrides)
  return config


def steps_logged(workdir):
  return [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def restored_state(workdir, config):
  template = trainer.create_state_from_config(config, jax.random.key(0))
  return Checkpointer(workdir / "checkpoints").restore(template)


def test_smoke_run_leaves_everything_and_resumes_exactly(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  straight = tmp_path / "straight"
  trainer.train(smoke(num_steps=9), straight)

  resumed = tmp_path / "resumed"
  last6 = trainer.train(smoke(), resumed)  # 6 steps ...
  assert np.isfinite(list(last6.values())).all()
  assert sorted(int(p.name) for p in (resumed / "checkpoints").iterdir()) == [3, 6]
  assert sorted(p.name for p in (resumed / "samples").iterdir()) == [
      "step_00000003.png", "step_00000006.png"]
  grid = Image.open(resumed / "samples" / "step_00000006.png")
  assert grid.size == (8 * 32 + 7, 8 * 32 + 7)
  assert list((resumed / "tensorboard").glob("events.out.tfevents.*"))
  assert json.loads((resumed / "config.json").read_text())["num_steps"] == 6
  assert steps_logged(resumed) == [2, 4, 6]
  metrics = json.loads((resumed / "metrics.jsonl").read_text().splitlines()[-1])
  assert {"d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm", "d_grad_norm", "steps_per_s",
          "images_per_s", "bad_images"} <= set(metrics)

  caplog.clear()
  trainer.train(smoke(num_steps=9), resumed)  # ... then 3 more in a second run
  assert "resumed from step 6" in caplog.text
  assert steps_logged(resumed) == [2, 4, 6, 8, 9]
  assert (resumed / "samples" / "step_00000009.png").exists()
  a, meta_a = restored_state(straight, smoke(num_steps=9))
  b, meta_b = restored_state(resumed, smoke(num_steps=9))
  assert int(a.step) == int(b.step) == 9 and meta_a["data_position"] == meta_b["data_position"] == 9
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):  # same data, same keys
    np.testing.assert_array_equal(x, y)
  assert (Image.open(straight / "samples" / "step_00000009.png").tobytes()
          == Image.open(resumed / "samples" / "step_00000009.png").tobytes())

  # A resumed run with an incompatible model refuses instead of overwriting the checkpoints.
  with pytest.raises(ConfigError, match="holds a run with config.model="):
    trainer.train(smoke(num_steps=12, **{"model.ngf": 16}), resumed)
  assert sorted(int(p.name) for p in (resumed / "checkpoints").iterdir()) == [6, 9]

  # Restoring just the generator needs no optimizer state.
  g = Checkpointer(resumed / "checkpoints", read_only=True).restore_generator()
  assert "g_params" in g
  assert set(g) <= {"g_params", "g_batch_stats", "g_ema_params", "g_ema_batch_stats"}
  generate, config = trainer.load_generator(resumed)
  out = generate(jax.numpy.zeros((2, config.latent_dim)))
  assert out.shape == (2, 32, 32, 3)


def test_cli_smoke_run_and_sample(tmp_path):
  workdir = tmp_path / "run"
  r = run_cli("experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
              f"--workdir={workdir}", "--config.num_steps=3", "--config.ema_decay=0.9")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "step 3/3" in r.stderr
  assert (workdir / "checkpoints" / "3").is_dir()
  out = tmp_path / "grid.png"
  r = run_cli("experiments.sample", f"--workdir={workdir}", "--num=12", f"--out={out}",
              "--interpolate", "--columns=4")
  assert r.returncode == 0, r.stderr[-3000:]
  assert Image.open(out).size == (4 * 32 + 3, 3 * 32 + 2)
  # Discriminator rejection sampling: D calibrated on the run's (synthetic) images, then filtered.
  r = run_cli("experiments.sample", f"--workdir={workdir}", "--num=4", f"--out={out}", "--drs",
              "--drs_steps=3", "--drs_real=32", "--drs_batch_size=8", "--drs_candidates=64",
              "--columns=4")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "DRS: calibrated D on 32 real images for 3 steps\nDRS: kept" in r.stdout
  assert Image.open(out).size == (4 * 32 + 3, 32)
  r = run_cli("experiments.sample", f"--workdir={workdir}", "--drs", "--interpolate")
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1] == (
      "error: --drs filters random samples; it cannot be combined with --interpolate")


@pytest.mark.parametrize("args,message", [
    (["--config.loss=vanilla"], "error: config.loss='vanilla' is unknown; choose one of"),
    (["--config.model.image_size=48"], "error: config.model.image_size must be a power of two"),
    (["--config.data.source=folder"], "error: config.data.source=folder needs config.data.path"),
    (["--config.data.source=folder", "--config.data.path=/nonexistent/faces.zip"],
     "error: data.path '/nonexistent/faces.zip' does not exist"),
    (["--config.batch_size=0"], "error: config.batch_size must be >= 1"),
    (["--config.no_such_key=1"], "error: unknown config key 'no_such_key'"),
    (["--config.batch_size=12"], "error: config.batch_size: the global batch of 12 is not "
     "divisible by the 8 devices"),  # conftest gives the subprocess 8 CPU devices
    (["--config.data.source=folder", "--config.data.path={tmp}"], "error: no images"),
    (["--config.data.source=tfds", "--config.data.name=mnist", "--config.data.data_dir={tmp}",
      "--config.data.download=False"], "error: tfds dataset 'mnist' is not prepared"),
])
def test_cli_bad_config_is_one_clear_line(tmp_path, args, message):
  (tmp_path / "empty").mkdir()
  args = [a.format(tmp=tmp_path / "empty") for a in args]
  r = run_cli("experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
              f"--workdir={tmp_path / 'w'}", *args, timeout=120)
  assert r.returncode != 0
  assert message in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()  # failed before building anything


def test_sample_cli_without_checkpoints_is_one_clear_line(tmp_path):
  r = run_cli("experiments.sample", f"--workdir={tmp_path}", timeout=120)
  assert r.returncode == 2 and "error: no checkpoint in" in r.stderr
  assert "Traceback" not in r.stderr


def test_validate_config_rejects_wrong_types():
  config = ml_collections.ConfigDict({**smoke().to_dict(), "batch_size": 8.5})
  with pytest.raises(ConfigError, match="batch_size must be an integer"):
    trainer.validate_config(config)


def test_default_config_is_the_dcgan_baseline():
  c = celeba.get_config()
  trainer.validate_config(c)
  assert (c.model.image_size, c.model.ngf, c.model.ndf, c.latent_dim) == (64, 64, 64, 100)
  assert (c.optimizer.g_lr, c.optimizer.b1, c.loss) == (2e-4, 0.5, "non_saturating")
  assert (c.data.source, c.data.name, c.data.crop) == ("tfds", "celeb_a", "center140")


def test_a_second_live_run_on_the_same_workdir_refuses(tmp_path):
  from jaxgan.checkpointing import WorkdirLock

  with WorkdirLock(tmp_path):  # a live run holds the workdir
    r = run_cli("experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
                f"--workdir={tmp_path}", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: {tmp_path} is in use by another live run (pid {os.getpid()}" in r.stderr
  # A holder that died (here: closed) leaves nothing stuck.
  with WorkdirLock(tmp_path):
    pass
  # kill -9 of a holder releases the lock too.
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; sys.path.insert(0, '.'); from jaxgan.checkpointing import WorkdirLock; "
      f"WorkdirLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)")],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(ConfigError, match="in use by another live run"):
    WorkdirLock(tmp_path).acquire()
  holder.kill()
  holder.wait()
  WorkdirLock(tmp_path).acquire().release()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preemption_signal_checkpoints_the_current_step_and_exits_0(tmp_path, sig):
  args = [sys.executable, "-m", "experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
          f"--workdir={tmp_path}", "--config.log_every=1", "--config.checkpoint_every=1000"]
  proc = subprocess.Popen(args + ["--config.num_steps=100000"], cwd=REPO, stderr=subprocess.PIPE,
                          text=True)
  try:
    for line in proc.stderr:
      if "step 3/100000" in line:  # training is under way
        proc.send_signal(sig)
        break
    rest = proc.communicate(timeout=120)[1]
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, rest[-2000:]
  match = re.search(rf"stopped by {sig.name} at step (\d+): checkpoint saved", rest)
  assert match, rest[-2000:]
  stopped_at = int(match.group(1))
  assert [int(p.name) for p in (tmp_path / "checkpoints").iterdir()] == [stopped_at]
  assert steps_logged(tmp_path)[-1] == stopped_at
  r = run_cli("experiments.celeba", *args[3:], f"--config.num_steps={stopped_at + 2}")
  assert r.returncode == 0 and f"resumed from step {stopped_at}" in r.stderr, r.stderr[-2000:]


def damage_by_deleting(state_dir):
  for p in [state_dir / "manifest.ocdbt", *state_dir.glob("ocdbt.process_*")]:
    shutil.rmtree(p) if p.is_dir() else p.unlink()


def damage_by_truncating(state_dir):
  for p in state_dir.rglob("*"):
    if p.is_file() and p.stat().st_size > 8:
      with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


@pytest.mark.parametrize("damage", [damage_by_deleting, damage_by_truncating])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage):
  trainer.train(smoke(), tmp_path)  # checkpoints at steps 3 and 6
  damage(tmp_path / "checkpoints" / "6" / "state")
  r = run_cli("experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
              f"--workdir={tmp_path}", "--config.num_steps=8")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "checkpoint at step 6 is unreadable" in r.stderr
  assert "Traceback" not in r.stderr and "tensorstore_spec" not in r.stderr  # one short line
  assert "resumed from step 3" in r.stderr
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [6, 8]
  (kept,) = (tmp_path / "corrupt_checkpoints").iterdir()  # the damaged one is kept aside
  assert kept.name.startswith("6-")
  assert steps_logged(tmp_path) == [2, 4, 6, 8]


def test_divergence_stops_with_the_step_and_the_last_good_checkpoint(tmp_path):
  base = ["--config=experiments/configs/celeba.py:smoke", f"--workdir={tmp_path}"]
  assert run_cli("experiments.celeba", *base, "--config.num_steps=3").returncode == 0
  # Resume with an absurd learning rate: params explode to inf/NaN within two steps.
  r = run_cli("experiments.celeba", *base, "--config.num_steps=9", "--config.optimizer.d_lr=1e30",
              "--config.optimizer.g_lr=1e30")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  match = re.search(r"error: training diverged: a non-finite loss, gradient or parameter at step "
                    r"(\d+); the last good checkpoint is step 3 in ", r.stderr)
  assert match and 4 <= int(match.group(1)) <= 6, r.stderr[-2000:]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [3]  # no NaN saved

  r = run_cli("experiments.celeba", *base, "--config.num_steps=7", "--config.optimizer.d_lr=1e30",
              "--config.optimizer.g_lr=1e30", "--config.nonfinite=skip")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "dropped" in r.stderr and "non-finite update(s)" in r.stderr
  logged = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert sum(e["nonfinite"] for e in logged if e["step"] > 3) >= 1
  state, _ = restored_state(tmp_path, smoke(num_steps=7))
  assert int(state.step) == 7
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
  num_steps = 16
  flags = ["--config=experiments/configs/celeba.py:smoke", f"--config.num_steps={num_steps}",
           "--config.log_every=1", "--config.checkpoint_every=4", "--config.sample_every=5"]
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.celeba", *flags,
                           f"--workdir={killed}"], cwd=REPO, stderr=subprocess.PIPE, text=True)
  killed_at = None
  try:
    for line in proc.stderr:
      # Checkpoints are written in the background, so "4" may appear a few steps after step 4:
      # kill at the first logged step >= 6 once it exists (several steps before the run ends).
      logged = re.search(rf"step (\d+)/{num_steps}", line)
      if logged and int(logged[1]) >= 6 and (killed / "checkpoints" / "4").is_dir():
        killed_at = int(logged[1])
        proc.kill()  # SIGKILL: no cleanup of any kind
        break
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed ({killed_at})"
  assert steps_logged(killed)[-1] >= 6  # logged past the checkpoint before dying
  r = run_cli("experiments.celeba", *flags, f"--workdir={killed}")
  resumed = re.search(r"resumed from step (\d+)", r.stderr)
  assert r.returncode == 0 and resumed, r.stderr[-2000:]
  assert 4 <= int(resumed[1]) < killed_at and int(resumed[1]) % 4 == 0
  assert run_cli("experiments.celeba", *flags, f"--workdir={straight}").returncode == 0

  def losses(workdir):
    return [{k: v for k, v in json.loads(l).items() if k not in ("steps_per_s", "images_per_s")}
            for l in (workdir / "metrics.jsonl").read_text().splitlines()]

  assert steps_logged(killed) == list(range(1, num_steps + 1))  # no step logged twice
  assert losses(killed) == losses(straight)
  a, _ = restored_state(killed, smoke(num_steps=num_steps))
  b, _ = restored_state(straight, smoke(num_steps=num_steps))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)  # bitwise
  for name in (f"step_{num_steps:08d}.png", "step_00000005.png", "step_00000010.png"):
    assert (killed / "samples" / name).read_bytes() == (straight / "samples" / name).read_bytes()


def test_program_skips_and_counts_corrupt_and_truncated_images(tmp_path):
  from test_input_pipeline import write_images

  write_images(tmp_path / "imgs", n=20, corrupt=2)
  r = run_cli("experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
              f"--workdir={tmp_path / 'w'}", "--config.data.source=folder",
              f"--config.data.path={tmp_path / 'imgs'}", "--config.data.crop=none",
              "--config.data.max_bad_fraction=0.2", "--config.batch_size=8",
              "--config.num_steps=6")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stderr.count("skipping unreadable image") == 2
  assert json.loads((tmp_path / "w" / "metrics.jsonl").read_text().splitlines()[-1])[
      "bad_images"] == 2
