"""orbax checkpoints of a GANState, with the run's metadata (config, data position).

Layout: `<directory>/<step>/state` (the whole GANState pytree) and
`<directory>/<step>/meta` (JSON: step, data_position, config). Saves are
asynchronous; the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pathlib
import shutil
import socket
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxgan.errors import ConfigError, first_line
from jaxgan.train import GANState

log = logging.getLogger(__name__)

GENERATOR_FIELDS = ("g_params", "g_batch_stats", "g_ema_params", "g_ema_batch_stats")


def _is_closed_loop_callback(unraisable) -> bool:
  """Whether an unraisable exception is a late read calling back into orbax's closed event loop."""
  error = unraisable.exc_value
  return (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
          and _passes_through(unraisable.exc_traceback, "call_soon_threadsafe"))


def _passes_through(traceback, function: str, file_part: str = "") -> bool:
  """Whether `traceback` has a frame of `function` in a file whose path contains `file_part`."""
  while traceback is not None:
    code = traceback.tb_frame.f_code
    if code.co_name == function and file_part in code.co_filename:
      return True
    traceback = traceback.tb_next
  return False


def _silence_closed_loop_callbacks() -> None:
  """Drops the "Event loop is closed" tracebacks that follow a failed restore.

  When one array of a damaged checkpoint cannot be read, orbax's restore raises and
  closes its event loop while tensorstore is still finishing the other reads. Each of
  those then fails to call back into the closed loop, and Python prints one traceback
  per array. They add nothing to the error or warning the caller reports, so this wraps
  `sys.unraisablehook` (once) to drop exactly those and pass on everything else.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_jaxgan_closed_loop_filter", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_callback(unraisable):
      previous(unraisable)

  hook._jaxgan_closed_loop_filter = True
  sys.unraisablehook = hook


def _is_orphaned_failed_read(record: logging.LogRecord) -> bool:
  """Whether an asyncio log record reports an orbax array read that failed after its restore did.

  The other half of the leftovers of a failed restore: a read that fails in the same last
  pass of the event loop as the one that failed the restore never reaches `asyncio.gather`,
  which would have marked its error as seen, so when the task is garbage-collected asyncio
  logs "Task exception was never retrieved" with a full traceback (through orbax's
  `async_deserialize`). Whether that happens depends on timing; the error it carries is the
  same damage the caller has already reported in one line.
  """
  return (bool(record.exc_info)
          and str(record.msg).split("\n", 1)[0].endswith("exception was never retrieved")
          and _passes_through(record.exc_info[2], "async_deserialize", "orbax"))


def _silence_orphaned_failed_reads() -> None:
  """Drops asyncio's "exception was never retrieved" tracebacks of orbax reads (once)."""
  asyncio_logger = logging.getLogger("asyncio")
  if not any(getattr(f, "_jaxgan_orphaned_read_filter", False) for f in asyncio_logger.filters):
    def drop(record: logging.LogRecord) -> bool:
      return not _is_orphaned_failed_read(record)

    drop._jaxgan_orphaned_read_filter = True
    asyncio_logger.addFilter(drop)


def _not_the_read_only_notice(record: logging.LogRecord) -> bool:
  """A logging filter: False for orbax's absl WARNING 'Given directory is read only=...'."""
  return not str(record.msg).startswith("Given directory is read only")


class Checkpointer:
  """Saves and restores GANStates under one directory."""

  def __init__(self, directory: str | pathlib.Path, keep: int = 3, asynchronous: bool = True,
               read_only: bool = False):
    self.directory = pathlib.Path(directory).expanduser().resolve()
    self.read_only = read_only
    _silence_closed_loop_callbacks()  # every restore below may meet a damaged checkpoint
    _silence_orphaned_failed_reads()
    # Readers (sampling, evaluation, --profile) ask for read-only themselves, so orbax's
    # warning that the directory is read-only tells the user nothing; it is dropped here only.
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_not_the_read_only_notice)
    try:
      self.manager = ocp.CheckpointManager(
          self.directory,
          item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                         "meta": ocp.JsonCheckpointHandler()},
          options=ocp.CheckpointManagerOptions(max_to_keep=None if read_only else keep,
                                               save_interval_steps=0 if read_only else 1,
                                               create=not read_only,
                                               read_only=read_only,
                                               enable_async_checkpointing=asynchronous))
    finally:
      absl_logger.removeFilter(_not_the_read_only_notice)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: GANState, meta: dict[str, Any]) -> None:
    """Starts saving `state` at `step` (returns before the write ends; see `wait`)."""
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave({"step": int(step), **meta})),
        force=True)

  def restore(self, target: GANState, step: int | None = None) -> tuple[GANState, dict] | None:
    """Restores the checkpoint at `step` (default: the newest readable one) into `target`'s structure.

    A checkpoint that cannot be read (partial or damaged files) is reported and
    skipped in favour of the next older one; once an older one is restored, the
    unreadable newer ones are moved to `<directory>/../corrupt_checkpoints/`
    (kept for inspection, out of the way of new saves). Returns None when no
    checkpoint can be read.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    unreadable = []
    for s in steps:
      try:
        item, missing_ema_stats = target, self._lacks_ema_batch_stats(s, target)
        if missing_ema_stats:
          item = target.replace(g_ema_batch_stats=None)
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=missing_ema_stats),
            meta=ocp.args.JsonRestore()))
        state = out["state"]
        if missing_ema_stats:  # saved before the EMA had its own BatchNorm statistics
          state = state.replace(g_ema_batch_stats=jax.tree.map(jax.numpy.copy, state.g_batch_stats))
          log.warning("the checkpoint of step %d has no BatchNorm statistics for the EMA of G "
                      "(an older jaxgan); starting them from G's", s)
      except Exception as e:  # noqa: BLE001 - any damage means: try the previous one
        if step is not None:
          raise
        log.warning("checkpoint at step %d is unreadable (%s); trying an older one", s,
                    first_line(e, limit=300))
        unreadable.append(s)
        continue
      if unreadable and not self.read_only and jax.process_index() == 0:
        self._quarantine(unreadable)  # a read-only reader (sampling, evaluation) moves nothing
      return state, dict(out["meta"])
    return None

  def _lacks_ema_batch_stats(self, step: int, target: GANState) -> bool:
    """Whether `target` has `g_ema_batch_stats` but the checkpoint at `step` does not."""
    if getattr(target, "g_ema_batch_stats", None) is None:
      return False
    try:
      tree = self.manager.item_metadata(step)["state"]
    except Exception:  # noqa: BLE001 - unreadable metadata: let restore report it
      return False
    tree = getattr(tree, "tree", tree)
    return isinstance(tree, dict) and not isinstance(tree.get("g_ema_batch_stats"), dict)

  def _quarantine(self, steps: list[int]) -> None:
    target = self.directory.parent / "corrupt_checkpoints"
    target.mkdir(exist_ok=True)
    for s in steps:
      destination = target / f"{s}-{time.strftime('%Y%m%d-%H%M%S')}"
      shutil.move(str(self.directory / str(s)), destination)
      log.warning("moved the unreadable checkpoint of step %d to %s", s, destination)
    self.manager.reload()

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                ["meta"])

  def restore_generator(self, step: int | None = None) -> dict[str, Any]:
    """Just G's parameters, BatchNorm statistics and EMA (no optimizer state), as NumPy arrays."""
    step = self.latest_step() if step is None else step
    tree = self.manager.item_metadata(step)["state"]
    tree = getattr(tree, "tree", tree)
    item = {k: tree[k] for k in GENERATOR_FIELDS if k in tree}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)))
    return dict(out["state"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class WorkdirLock:
  """Keeps a second live run off a workdir: an exclusive `flock` on `<workdir>/.lock`.

  The kernel drops the lock when its process ends, however it ends (kill -9
  included), so a crashed run never leaves the workdir stuck. The file holds
  the owner's host and pid for the error message.
  """

  def __init__(self, workdir: str | pathlib.Path):
    self.path = pathlib.Path(workdir) / ".lock"
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise ConfigError(f"{self.path.parent} is in use by another live run ({owner}); wait for it "
                        "to finish or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing drops the flock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def tree_digest(tree: Any) -> str:
  """sha256 (hex) over a pytree's leaf paths and bytes: names a set of weights wherever they
  are stored (a feature network's statistics cache, the classifier behind a benchmark's scores)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree.leaves_with_path(tree):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()


def refuse_changed_settings(saved: dict, current: dict, keys, workdir: str | pathlib.Path,
                            added_keys: dict[str, Any]) -> None:
  """One-line ConfigError when a run's saved config and the `current` one differ in one of
  `keys`. A key in `added_keys` that the saved config lacks counts as its value there: runs
  saved before the key existed trained that way, so they resume with that value only."""
  saved = {**added_keys, **saved}
  for key in sorted(keys):
    if saved.get(key) != current.get(key):
      raise ConfigError(f"{workdir} holds a run with config.{key}={saved.get(key)!r}, not "
                        f"{current.get(key)!r}; resume with the same settings or use a new "
                        "--workdir")


def read_run(workdir: str | pathlib.Path, program: str, kind: str,
             holds_run: Callable[[dict], bool], added_keys: dict[str, Any],
             make_target: Callable[[ml_collections.ConfigDict], Any], *, read_only: bool
             ) -> tuple[ml_collections.ConfigDict, Any, dict]:
  """A benchmark program's run, for readers (--profile, --drs, --rescore): its config (the
  saved one, with `added_keys` where it lacks them), the newest readable checkpoint's state
  (in `make_target(config)`'s structure) and that checkpoint's meta. One-line ConfigErrors
  when `workdir` has no checkpoints, holds another program's run (`holds_run(meta)` is
  False; `kind` names what to give instead) or none of its checkpoints can be read."""
  directory = pathlib.Path(workdir).expanduser() / "checkpoints"
  checkpointer = directory.is_dir() and Checkpointer(directory, asynchronous=False,
                                                     read_only=read_only)
  if not checkpointer or not checkpointer.all_steps():  # not a run's workdir: leave it as it is
    raise ConfigError(f"no checkpoints in {directory}; give the --workdir of a run of {program}")
  meta = checkpointer.restore_meta()
  if not holds_run(meta):
    raise ConfigError(f"{workdir} holds no run of {program}; give the --workdir of {kind}")
  c = ml_collections.ConfigDict({**added_keys, **(meta.get("config") or {})})
  restored = checkpointer.restore(make_target(c))
  if restored is None:
    raise ConfigError(f"no checkpoint in {directory} could be restored (see the warnings above)")
  return c, *restored


class ResumableRun:
  """A benchmark program's workdir that resumes where the run stopped.

  The workdir holds `checkpoints/` and `metrics.jsonl`. After each evaluation
  the program calls `log` with the metrics line and then `save` with the state.
  A rerun with the same command calls `resume`. It restores the newest checkpoint,
  after checking that the checkpoint was written with the same config (except
  `may_change`, e.g. `num_steps` to train further; a key in `added_keys` that the
  saved config lacks counts as its value there, the behaviour before the key existed,
  so runs of an older version resume). It then cuts metrics.jsonl
  back to the lines that checkpoint had seen. A line written after the last
  checkpoint is computed again, the same way: the programs are deterministic.
  `WorkdirLock` keeps a second live run off the workdir.
  """

  def __init__(self, workdir: str | pathlib.Path, config, may_change: tuple[str, ...] = (),
               keep: int = 2, added_keys: dict[str, Any] | None = None):
    self.workdir = pathlib.Path(workdir).expanduser()
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.lock = WorkdirLock(self.workdir).acquire()
    self.config = json.loads(config.to_json_best_effort())
    self.may_change = may_change
    self.added_keys = dict(added_keys or {})
    self.metrics_path = self.workdir / "metrics.jsonl"
    self.checkpointer = Checkpointer(self.workdir / "checkpoints", keep=keep, asynchronous=False)
    self.lines = 0

  def resume(self, target: GANState) -> tuple[GANState, dict] | None:
    """The newest checkpoint's state (in `target`'s structure) and meta, or None for a new run."""
    if not self.checkpointer.all_steps():
      if (self.workdir / "results.json").exists():
        raise ConfigError(f"{self.workdir} holds the results of a run without checkpoints; "
                          "use a new --workdir")
      self.metrics_path.write_text("")
      return None
    try:  # the config first: another config's state would not fit `target`
      saved = self.checkpointer.restore_meta().get("config")
    except Exception:  # noqa: BLE001 - a damaged newest checkpoint; restore() falls back
      saved = None
    if saved is not None:
      self._check_config(saved)
    restored = self.checkpointer.restore(target)
    if restored is None:
      raise ConfigError(f"no checkpoint in {self.checkpointer.directory} could be restored (see "
                        "the warnings above); use a new --workdir")
    state, meta = restored
    self._check_config(meta.get("config", {}))
    self.lines = int(meta["metrics_lines"])
    logged = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
    self.metrics_path.write_text("".join(line + "\n" for line in logged[:self.lines]))
    log.info("resumed %s from its checkpoint at %d", self.workdir, self.checkpointer.latest_step())
    return state, meta

  def check_resume_step(self, step: int, num_steps: int, eval_every: int | None = None) -> None:
    """Refuses a resumed `step` that config.num_steps (or eval_every's chunks) cannot reach."""
    if step <= num_steps and not (eval_every and step % eval_every):
      return
    every = (f" and config.eval_every={eval_every} must divide it" if eval_every else "")
    raise ConfigError(f"{self.workdir} holds a run at step {step}; config.num_steps={num_steps} "
                      f"must be at least that{every} (or use a new --workdir)")

  def _check_config(self, saved: dict) -> None:
    keys = (set(self.added_keys) | set(saved) | set(self.config)) - set(self.may_change)
    refuse_changed_settings(saved, self.config, keys, self.workdir, self.added_keys)

  def logged(self) -> list[dict]:
    """The metrics lines written so far (this run's and, after a resume, the earlier ones)."""
    return [json.loads(line) for line in self.metrics_path.read_text().splitlines()]

  def log(self, entry: dict) -> None:
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(entry) + "\n")
    self.lines += 1

  def save(self, step: int, state: GANState, **meta) -> None:
    """Saves `state` (any GANState-structured pytree) at `step`, with `meta` (JSON)."""
    self.checkpointer.save(step, state, {"metrics_lines": self.lines, "config": self.config,
                                         **meta})

  def close(self) -> None:
    self.checkpointer.close()
    self.lock.release()

  def __enter__(self) -> "ResumableRun":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
