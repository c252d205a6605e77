"""Step time of the 2-D mixture benchmark (`experiments.toy`), every seed at once, as it trains.

    python benchmarks/toy_step.py [--variants=grid,grid+pack=4+simultaneous=True]
                                  [--seeds=1,3,10] [--steps=500] [--repeats=2]
                                  [--xla_flags="|--xla_cpu_...=..."]

A variant is a toy.py preset (ring, grid, ring-best, grid-best, smoke) with `+key=value`
config overrides. Each (variant, seeds, XLA flags) is measured in a subprocess of its own
(XLA_FLAGS only take effect before jax starts; `--xla_flags` is a `|`-separated list of flag
sets, added to the environment's, the empty set meaning XLA's defaults). The subprocess
builds the very program `experiments.toy` trains with (`mixture_benchmark.chunk_trainer`)
at `--steps` steps per call, and times the calls after the first. Prints the first call
(compile + one call), ms per step of all seeds, ms per seed-step (what one more seed costs),
GFLOP/s (XLA's count of one step) and the hours the variant's `num_steps` would take.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class VariantError(ValueError):
  """A --variants entry names an unknown preset or key, or a value of the wrong type."""


def variant_config(variant: str):
  """The toy.py config of `variant`: "preset" or "preset+key=value+key=value"."""
  from experiments.configs import toy
  from jaxgan.errors import ConfigError
  from jaxgan.mixture_benchmark import validate_config

  preset, *overrides = variant.split("+")
  try:
    c = toy.get_config(preset)
  except ValueError as e:
    raise VariantError(f"variant {variant!r}: {e}") from None
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep or key not in c:
      raise VariantError(f"variant {variant!r}: {item!r} is not key=value with a key of "
                         f"toy.py's config (e.g. pack=4, simultaneous=True)")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      c[key] = value
    except (TypeError, ValueError):
      raise VariantError(f"variant {variant!r}: config.{key}={text!r} is not of type "
                         f"{type(c[key]).__name__}, as its default {c[key]!r}") from None
  try:
    validate_config(c)
  except ConfigError as e:
    raise VariantError(f"variant {variant!r}: {e}") from None
  return c


def measure(variant: str, num_seeds: int, steps: int, repeats: int) -> dict:
  """Times `repeats` calls of the variant's chunk trainer (`steps` steps each, all seeds)
  after a first call that compiles it, in this process."""
  import jax

  from jaxgan import mixture_benchmark
  from jaxgan.train import train_step

  c = variant_config(variant)
  c.num_seeds = num_seeds
  keys = mixture_benchmark.seed_streams(c.seed, c.num_seeds)
  states = mixture_benchmark.init_states(c, keys)
  data = mixture_benchmark.training_points(c, keys)
  train_fn = mixture_benchmark.chunk_trainer(c, steps)
  args = (data, keys["train"], keys["minibatch"])

  # XLA's FLOP count of one step of all seeds (a scanned chunk would count its body once).
  batch = {"image": data[:, :mixture_benchmark.samples_per_step(c)]}
  analysis = jax.jit(jax.vmap(train_step)).lower(states, batch, keys["train"]).cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  flops = float((analysis or {}).get("flops", 0.0))

  t = time.perf_counter()
  states, losses = train_fn(states, *args)
  jax.block_until_ready(losses)
  first_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    states, losses = train_fn(states, *args)
    jax.block_until_ready(losses)
    times.append(time.perf_counter() - t)
  step_s = min(times) / steps
  return {"variant": variant, "seeds": num_seeds, "steps": steps, "first_call_s": first_s,
          "step_ms": 1e3 * step_s, "step_ms_all": [1e3 * t / steps for t in times],
          "seed_step_ms": 1e3 * step_s / num_seeds, "gflops_per_s": flops / step_s / 1e9,
          "num_steps": c.num_steps, "run_hours": step_s * c.num_steps / 3600,
          "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
          "jax": jax.__version__}


def run_worker(variant: str, num_seeds: int, flags: str, args) -> dict:
  """`measure` in a subprocess with `flags` added to XLA_FLAGS."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), flags) if f)
  spec = json.dumps({"variant": variant, "seeds": num_seeds, "steps": args.steps,
                     "repeats": args.repeats})
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec],
                        env=env, capture_output=True, text=True)
  rows = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not rows:
    lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
    return {"variant": variant, "seeds": num_seeds, "xla_flags": flags,
            "error": f"exit {proc.returncode}: {lines[-1][:300]}"}
  return {**json.loads(rows[-1]), "xla_flags": flags}


def _hours(hours: float) -> str:
  return f"{hours:.2f}" if hours >= 0.01 else f"{3600 * hours:.1f} s"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default="grid,grid+pack=4+simultaneous=True",
                      help="comma-separated toy.py presets with +key=value overrides")
  parser.add_argument("--seeds", default="1,3,10", help="comma-separated numbers of seeds")
  parser.add_argument("--steps", type=int, default=500, help="steps per timed call")
  parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
  parser.add_argument("--xla_flags", default="",
                      help="'|'-separated XLA flag sets to compare ('' = XLA's defaults)")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:
    spec = json.loads(args.worker)
    print(json.dumps(measure(spec["variant"], spec["seeds"], spec["steps"], spec["repeats"])))
    return 0
  variants = [v for v in args.variants.split(",") if v]
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s]
  except ValueError:
    parser.error(f"--seeds={args.seeds!r} must be comma-separated integers, e.g. 1,3,10")
  if not variants or not seeds or min(seeds) < 1 or args.steps < 1 or args.repeats < 1:
    parser.error("--variants and --seeds must be non-empty, seeds, --steps and --repeats >= 1")
  try:
    for v in variants:
      variant_config(v)
  except VariantError as e:
    parser.error(str(e))

  print(f"{os.cpu_count()} CPU cores; {args.steps} steps per call, best of {args.repeats} "
        "calls after the first")
  print("variant | seeds | XLA flags | first call (s) | ms/step | ms/seed-step | GFLOP/s "
        "| hours for num_steps")
  print("--- | --- | --- | --- | --- | --- | --- | ---")
  rows = []
  for variant in variants:
    for flags in (f.strip() for f in args.xla_flags.split("|")):
      for n in seeds:
        r = run_worker(variant, n, flags, args)
        rows.append(r)
        if "error" in r:
          print(f"{variant} | {n} | {flags or 'default'} | failed: {r['error']}", flush=True)
          continue
        print(f"{variant} | {n} | {flags or 'default'} | {r['first_call_s']:.1f} | "
              f"{r['step_ms']:.2f} | {r['seed_step_ms']:.2f} | {r['gflops_per_s']:.0f} | "
              f"{_hours(r['run_hours'])} ({r['num_steps']:,} steps)", flush=True)
  ok = [r for r in rows if "error" not in r]
  if ok:
    print(f"device: {ok[0]['device']}, jax {ok[0]['jax']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  return 1 if len(ok) < len(rows) else 0


if __name__ == "__main__":
  sys.exit(main())
