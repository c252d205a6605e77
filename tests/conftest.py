"""Test set-up: 8 simulated CPU devices (set before JAX initialises) and shared fixtures."""

import atexit
import os
import pathlib
import shutil
import tempfile

# The models in the tests are tiny, so the tests are mostly XLA compiles, and XLA's CPU backend
# spends most of a compile in LLVM's optimisation passes. At level 0 a compile takes ~5x less
# (a tiny DCGAN-TF generator's init: 0.6 s against 3.0 s). With it, and test_fast_paths
# compiling per network, the README's `pytest -q -n 2` went from 917 to 462 s on a 2-core
# machine, alone. The HLO is the same; only the machine code differs, which moves results by
# float rounding (FMA contraction): 1.2e-7 at most in a tiny DCGAN's state after 3 steps.
# Users' runs keep XLA's default level; a level given in XLA_FLAGS wins here too.
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# Temporary files of the libraries (tfds's dataset_info makes a `tmp*tfds` folder per use and
# leaves it) go to one folder per session, removed at exit - in the subprocesses too. pytest's
# own tmp_path folders stay in the system's temp dir, kept for inspection as usual.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
_TMP = tempfile.mkdtemp(prefix="jaxgan-test-tmp-")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
os.environ["TMPDIR"] = tempfile.tempdir = _TMP

# One persistent compilation cache per test session, shared with the program's subprocesses:
# they compile the same smoke model again and again (24 s -> 9 s per run). Fresh each session.
_CACHE = tempfile.mkdtemp(prefix="jaxgan-test-xla-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# Weights, converted weights and reference features go to a per-session cache, never ~/.cache.
os.environ["JAXGAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxgan-test-cache-")
atexit.register(shutil.rmtree, os.environ["JAXGAN_CACHE_DIR"], ignore_errors=True)
os.environ.pop("JAXGAN_FID_WEIGHTS", None)

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not available: {SHARED_DATA} is absent (it sits beside the checkout)")
  return SHARED_DATA
