#!/usr/bin/env bash
# Everything this project measures on a GPU, in one call that ends by a deadline:
#   1. issue 8: the DCGAN-64 train step, jaxgan beside PyTorch eager and torch.compile
#      (batches 64 and 128, float32), jaxgan in bfloat16, and the upsampling path that
#      `auto` does not pick for each dtype (transpose in float32, phase in bfloat16);
#   3. issue 7: the 2-D mixture benchmark's best settings (ring-best and grid-best, 10 seeds,
#      run side by side), for the longest of 400k/200k/100k/50k/20k steps that a short probe
#      says fits in the time left;
#      then each toy run scored after discriminator rejection sampling (`--drs`, TOY_DRS=1,
#      the default; DRS_RESERVE_S, default 60, is kept for it out of the toy runs' time;
#      DRS_FLAGS go to it, e.g. "--drs_steps=50 --drs_samples=200" for a dry run);
#   2. issue 7: Stacked MNIST at the full protocol (PARTS=stacked, before the toy runs): the
#      MNIST classifier, then DCGAN and PacDCGAN2 side by side, each stopped by STACKED_CAP_S.
#   issue 7: the grid GAN's step time at 1 and 10 seeds (`benchmarks/toy_step.py`, at most
#      60 s; PARTS toystep, in the default; TOYSTEP_ARGS replaces its arguments, e.g. for a
#      dry run), to check on the GPU that 10 seeds cost little more than one;
#
#   OUT=results DEADLINE_S=560 bash benchmarks/gpu_session.sh
#
# Run from the repository root. Writes OUT/env.txt, OUT/bench.log, OUT/toy.log as it goes and
# OUT/results.tar.gz (the benchmark's JSON rows, the toy runs' metrics and results) at the end.
# If .whl/ holds wheels (ml_collections, say), they are installed into /tmp/site first.
# PARTS=bench,toystep,toy chooses the parts; TOY_RUNS the toy.py variants (default "ring-best
# grid-best"; "grid-best+d_lr=4e-4" adds --config.d_lr=4e-4 to that run), TOY_FLAGS flags for
# all of them (e.g. "--config.pack=4"), TOY_CANDIDATES the step counts to choose from (longest
# first). For a dry run on a CPU: BENCH_STEPS, BENCH_REPEATS, PROBE_STEPS.
# Stacked MNIST reads MNIST_DIR (default .mnist): the device gets no ../shared, so link it and
# carry the four files (the link is ignored, nothing is copied into the repository):
#   ln -s ../shared/data/mnist .mnist && echo /.mnist >> .git/info/exclude
#   carry: .mnist/train-images-idx3-ubyte.gz .mnist/train-labels-idx1-ubyte.gz (and t10k-*)
# STACKED_PACKS (default "1 2") and STACKED_FLAGS (for all runs) choose the runs;
# STACKED_FLAGS="--config=experiments/configs/stacked_mnist.py:pacgan" trains PacGAN's released
# protocol (it stacks test digits too: carry the t10k-* files);
# CLASSIFIER_FLAGS go to the classifier (a dry run: its and the runs' --config=...:smoke).
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
BUDGET=${DEADLINE_S:-560}
BENCH_STEPS=${BENCH_STEPS:-100}
BENCH_REPEATS=${BENCH_REPEATS:-5}
PROBE_STEPS=${PROBE_STEPS:-10000}
TOY_FLAGS=${TOY_FLAGS:-}
TOY_RUNS=${TOY_RUNS:-ring-best grid-best}  # toy.py variants, run side by side
PARTS=${PARTS:-bench,toystep,toy}
TOY_DRS=${TOY_DRS:-1}
reserve=$((TOY_DRS == 1 ? ${DRS_RESERVE_S:-60} : 0))  # seconds kept for --drs after the toy runs
WORK=$(mktemp -d)
start=$SECONDS
left() { echo $((BUDGET - (SECONDS - start))); }
cap() { local l; l=$(left); echo $(($1 < l ? $1 : l)); }  # min(the phase's cap, time left)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
{
  date -u; git rev-parse HEAD 2>/dev/null; nvidia-smi 2>&1 | head -20
  $PY -c "import sys, jax, flax, optax; print(sys.version); print('jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
  nproc
} >"$OUT/env.txt" 2>&1

# 1. The train step (issue 8). Each invocation prints its own table; failures go on.
bench() {  # cap_s name args...
  [[ ,$PARTS, == *,bench,* ]] || return 0
  local c=$1 name=$2
  shift 2
  echo "== $name ($(left) s left)" >>"$OUT/bench.log"
  timeout "$(cap "$c")" $PY benchmarks/train_step.py --steps="$BENCH_STEPS" \
    --repeats="$BENCH_REPEATS" --json="$WORK/bench_$name.json" "$@" >>"$OUT/bench.log" 2>&1 ||
    echo "   $name: exit $?" >>"$OUT/bench.log"
}
bench 240 f32_b64 --batches=64 --torch_compile --torch_compile_modes=default,reduce-overhead \
  --worker_timeout=150
bench 240 f32_b128 --batches=128 --torch_compile --torch_compile_modes=default,reduce-overhead \
  --worker_timeout=150
bench 70 bf16 --batches=64,128 --dtype=bfloat16 --no_torch --worker_timeout=60
bench 40 transpose_b64 --batches=64 --upsample=transpose --no_torch --worker_timeout=35
bench 70 phase_bf16 --batches=64,128 --upsample=phase --dtype=bfloat16 --no_torch --worker_timeout=60

# The grid GAN's toy step at 1 and 10 seeds (issue 7), each in its own subprocess.
if [[ ,$PARTS, == *,toystep,* ]]; then
  echo "== toy step ($(left) s left)" >>"$OUT/bench.log"
  # shellcheck disable=SC2086  # TOYSTEP_ARGS holds several arguments
  timeout "$(cap 60)" $PY benchmarks/toy_step.py --json="$WORK/toystep.json" \
    ${TOYSTEP_ARGS:---variants=grid --seeds=1,10 --steps=1000} \
    >>"$OUT/bench.log" 2>&1 || echo "   toy step: exit $?" >>"$OUT/bench.log"
fi

# 2. Stacked MNIST (issue 7), before the toy runs, which take whatever time is left.
stacked() {
  [[ ,$PARTS, == *,stacked,* ]] || return 0
  local mnist=${MNIST_DIR:-.mnist} p
  if ! compgen -G "$mnist/train-images*" >/dev/null; then
    echo "== stacked: no MNIST in $mnist (see the header); skipped" >>"$OUT/stacked.log"
    return 0
  fi
  echo "== classifier ($(left) s left)" >>"$OUT/stacked.log"
  # shellcheck disable=SC2086  # the extra flags come first: they may name the --config file
  timeout "$(cap 150)" $PY -m experiments.mnist_classifier ${CLASSIFIER_FLAGS:-} \
    --workdir="$WORK/classifier" --config.data_dir="$mnist" >>"$OUT/stacked.log" 2>&1 ||
    { echo "   classifier: exit $?" >>"$OUT/stacked.log"; return 0; }
  echo "== stacked MNIST, packs ${STACKED_PACKS:-1 2} side by side ($(left) s left)" \
    >>"$OUT/stacked.log"
  for p in ${STACKED_PACKS:-1 2}; do
    # shellcheck disable=SC2086  # as above
    timeout "$(cap "${STACKED_CAP_S:-240}")" env XLA_PYTHON_CLIENT_MEM_FRACTION=0.3 \
      $PY -m experiments.stacked_mnist ${STACKED_FLAGS:-} --workdir="$WORK/stacked_pac$p" \
      --config.pack="$p" --config.classifier_dir="$WORK/classifier" --config.data_dir="$mnist" \
      >>"$OUT/stacked.log" 2>&1 &
  done
  wait
}
stacked

# 3. The 2-D mixture benchmark (issue 7): probe the speed of both runs side by side.
toy() {  # seconds run workdir extra-flags...: one run, stopped after `seconds`
  local t=$1 run=$2 dir=$3 pairs=() flags=() kv
  shift 3
  if [[ $run == *+* ]]; then  # variant+key=value+...: config overrides of this run only
    IFS=+ read -ra pairs <<<"${run#*+}"
    for kv in "${pairs[@]}"; do flags+=("--config.$kv"); done
  fi
  # shellcheck disable=SC2086  # TOY_FLAGS holds several flags
  timeout "$t" env XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 $PY -m experiments.toy \
    --config=experiments/configs/toy.py:"${run%%+*}" --workdir="$dir" $TOY_FLAGS \
    "${flags[@]}" "$@"
}
half=$((PROBE_STEPS / 2))
[[ ,$PARTS, == *,toy,* ]] || TOY_RUNS=""
[ -n "$TOY_RUNS" ] && echo "== probe: $PROBE_STEPS steps of $TOY_RUNS side by side ($(left) s left)" \
  >>"$OUT/toy.log"
for v in $TOY_RUNS; do
  toy "$(cap 120)" "$v" "$WORK/probe_$v" --config.num_steps="$PROBE_STEPS" \
    --config.eval_every="$half" >>"$OUT/toy.log" 2>&1 &
done
wait
plan=$($PY - "$WORK" "$half" "$(($(left) - reserve))" "${TOY_CANDIDATES:-400000 200000 100000 50000 20000}" \
  $TOY_RUNS 2>>"$OUT/toy.log" <<'EOF'
import json, pathlib, sys
work, half, left = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
per_step, first = 0.0, 0.0
if len(sys.argv) < 6:
  sys.exit("no toy runs")
for v in sys.argv[5:]:
  rows = [json.loads(l) for l in (work / f"probe_{v}" / "metrics.jsonl").read_text().splitlines()]
  step_s = (rows[1]["seconds"] - rows[0]["seconds"]) / half
  per_step, first = max(per_step, step_s), max(first, rows[0]["seconds"] - half * step_s)
fits = [n for n in map(int, sys.argv[4].split()) if n * per_step * 1.1 + first + 40 < left]
print(fits[0] if fits else 0, f"{per_step * 1e3:.3f}", f"{first:.1f}")
EOF
) || plan="0 ? ?"
read -r steps ms_per_step first_s <<<"$plan"
[ -n "$TOY_RUNS" ] && echo "== side by side: $ms_per_step ms/step, $first_s s before the first; \
chosen: $steps steps" >>"$OUT/toy.log"
if [ "$steps" -gt 0 ]; then
  every=$((steps >= 100000 ? 20000 : steps / 5))
  for v in $TOY_RUNS; do
    toy "$(($(left) - 15 - reserve))" "$v" "$WORK/toy_$v" --config.num_steps="$steps" \
      --config.eval_every="$every" >>"$OUT/toy.log" 2>&1 &
  done
  wait
fi
if [ "$TOY_DRS" = 1 ]; then  # the runs' newest checkpoints, after rejection sampling
  for d in "$WORK"/toy_*; do
    [ -d "$d/checkpoints" ] || continue
    echo "== DRS: $(basename "$d") ($(left) s left)" >>"$OUT/toy.log"
    timeout "$(($(left) - 10))" env XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 \
      $PY -m experiments.toy --workdir="$d" --drs ${DRS_FLAGS:-} >>"$OUT/toy.log" 2>&1 &
  done
  wait
fi

mkdir -p "$WORK/pack"
cp "$WORK"/bench_*.json "$WORK"/toystep.json "$WORK/pack/" 2>/dev/null
[ -f "$WORK/classifier/metrics.json" ] && cp "$WORK/classifier/metrics.json" \
  "$WORK/pack/classifier_metrics.json"
for d in "$WORK"/probe_* "$WORK"/toy_* "$WORK"/stacked_*; do
  [ -d "$d" ] || continue
  n=$(basename "$d")
  for f in metrics.jsonl results.json drs.json samples_seed0.png; do
    [ -f "$d/$f" ] && cp "$d/$f" "$WORK/pack/${n}_$f"
  done
done
tar -czf "$OUT/results.tar.gz" -C "$WORK/pack" .
echo "done in $((SECONDS - start)) s" >>"$OUT/toy.log"
tail -n 50 "$OUT/bench.log" 2>/dev/null | grep -E "^(jaxgan|torch|==|DCGAN|grid|   )" || true
grep -E "^==|accuracy|Stacked|exit" "$OUT/stacked.log" 2>/dev/null | tail -n 8
grep -E "^==|modes|G: |G \+ DRS \(|done in" "$OUT/toy.log" | tail -n 16
