#!/usr/bin/env bash
# Issue 24's GPU evidence, one part per GPU session (one call of at most ~9 minutes each):
#
#   bash benchmarks/gpu_evidence.sh listops              # Luna-16 + spt, Luna-16, its P-mean twin
#   bash benchmarks/gpu_evidence.sh listops_luna256      # Luna-256 x3 beside a Transformer seed
#   bash benchmarks/gpu_evidence.sh listops_transformer  # Transformer seeds 1 and 2 (H200)
#   bash benchmarks/gpu_evidence.sh pathfinder           # Pathfinder-32 shortened, both models
#
# Each part generates its data (the official distribution / size, 16 processes), runs its sweep
# with `benchmarks.reproduce` (several runs per GPU, a deadline that ends the call in time) and
# writes to <part>/: the runs' small files (<sweep>/runs/<config>/<variant>/seed<k>/:
# results.json, config.json, metrics.jsonl, kind.json, train.log), <sweep>/sweep.json (every run's
# command, environment and state), <sweep>/leaderboard.md, the sweep's and the generator's output,
# and the machine's record (nvidia-smi, package versions). The device tool brings back at most 8
# files from $OUT, no more than 2 folders down, named in letters, digits, '.', '_' and '-': so
# <part>/ is packed into the one file $OUT/<part>.tgz when the script ends, on an error or SIGTERM
# too (a SIGKILL at the call's limit loses it: BUDGET_S ends the call before). Estimates,
# priorities and how to commit the results: benchmarks/results/gpu/README.md ("Issue 24").
#
# Environment: OUT (required), BUDGET_S (seconds the whole call may take, default 540),
# PYTHON (default python3), PRECISION (train.py flag for mixed precision, default
# --config.model.precision=bfloat16), REHEARSAL=1 (a CPU rehearsal: small data, --debug runs).
set -euo pipefail
part=${1:?usage: bash benchmarks/gpu_evidence.sh PART (see above)}
: "${OUT:?set OUT to the folder that comes back}"
BUDGET_S=${BUDGET_S:-540}
PYTHON=${PYTHON:-python3}
PRECISION=${PRECISION:---config.model.precision=bfloat16}
REHEARSAL=${REHEARSAL:-0}
cd "$(dirname "$0")/.."
out="$OUT/$part"
mkdir -p "$out"
# One archive instead of the tree (see above); the tree stays where packing fails.
pack() { tar -czf "$OUT/$part.tgz" -C "$OUT" "$part" && rm -rf "$out"; }
trap pack EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# Runs of the same variant compile the same programs: compile once per machine.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-${TMPDIR:-/tmp}/luna_jax_xla_cache}
data=data
release=$data/lra_release/lra_release
debug=()
listops_sizes=(--num_workers 16)
pathfinder_size=200000
if [ "$REHEARSAL" = 1 ]; then
  debug=(--debug)
  listops_sizes=(--num_train 200 --num_val 40 --num_test 40 --min_length 10 --max_length 60
    --max_depth 4 --max_args 5 --num_workers 2)
  pathfinder_size=200
fi

{
  date -u +%FT%TZ
  git rev-parse HEAD 2>/dev/null || echo 'no git checkout'
  nvidia-smi 2>/dev/null || echo 'no nvidia-smi'
  "$PYTHON" -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|jax-cuda\S*|flax|optax|orbax\S*) ' \
    || true
} >"$out/machine.txt"

# Minutes left for the sweep: the budget less what has passed, less 60 s to stop runs (SIGTERM,
# then SIGKILL after 20 s), copy their files and write the report.
deadline() { "$PYTHON" -c "print(round(max(0.5, ($BUDGET_S - $SECONDS - 60) / 60), 2))"; }
# GPU memory in MiB (0 without a GPU): the Transformers' places depend on it.
gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null || true)
gpu_mib=${gpu_mib%%$'\n'*}
gpu_mib=${gpu_mib:-0}

listops_data() {
  "$PYTHON" -m lra.listops_generator --output_dir "$release/listops-1000" "${listops_sizes[@]}" \
    2>&1 | tee -a "$out/data.log"
}

sweep() {  # sweep <name> <reproduce flags...> -- <train.py flags...>
  local name=$1
  shift
  "$PYTHON" -m benchmarks.reproduce --data_dir "$data" --runs_dir "runs/gpu24/$name" \
    --report_dir "$out/$name" --collect_to "$out/$name" --benchmark_json '' --status_every 60 \
    --deadline_minutes "$(deadline)" ${debug[@]+"${debug[@]}"} "$@" 2>&1 \
    | tee "$out/$name.log" || true
}

case "$part" in
  listops)
    # Luna-16 self-pretrained on the training inputs (5000 masked-LM + 5000 steps), Luna-16
    # (Table 1) and its P-mean twin (Table 3); seed 0 of each first, 5 runs at a time.
    listops_data
    sweep listops --tasks listops --variants luna16+spt,luna16,luna16_pmean --seeds 3 \
      --order seed --runs_per_device 5 -- "$PRECISION" --config.training.eval_every=500
    ;;
  listops_luna256)
    # Two sweeps side by side, each with its memory share (XLA:CPU's analysis of the steps: Luna-256
    # 6 GiB, the Transformer 43 GiB): Luna-256 x3, and the Transformer's seed 0 with the rest.
    listops_data
    sweep luna256 --tasks listops --variants luna256 --seeds 3 --runs_per_device 3 \
      --memory_fraction 0.12 -- "$PRECISION" --config.training.eval_every=500 &
    sweep transformer --tasks listops --variants transformer --seeds 1 --memory_fraction 0.6 \
      -- "$PRECISION" --config.training.eval_every=500 &
    wait
    ;;
  listops_transformer)
    # The Transformer's seeds 1 and 2 side by side: XLA:GPU's compile of the step for an H100 holds
    # 27.95 GiB in the bfloat16 policy (benchmarks/results/gpu/compiled_h100/), so two fit an
    # H100's 80 GB as well as an H200's 141 GB; a card under 70 GB runs seed 1 alone.
    listops_data
    seeds=2 share=0.45
    if [ "$gpu_mib" -lt 70000 ]; then seeds=1 share=0.85; fi
    sweep transformer --tasks listops --variants transformer --seeds "$seeds" --first_seed 1 \
      --runs_per_device "$seeds" --memory_fraction "$share" -- "$PRECISION" \
      --config.training.eval_every=500
    ;;
  pathfinder)
    # 200,000 images in the release layout, loaded once to build the token cache, then the two
    # shortened recipes side by side, each allowed 85% of the GPU (Luna-16 needs a tenth of the
    # Transformer's memory).
    "$PYTHON" -m lra.pathfinder_generator --output_dir "$release" --resolution 32 \
      --difficulty hard --num_examples "$pathfinder_size" --seed 0 --num_workers 16 \
      2>&1 | tee -a "$out/data.log"
    "$PYTHON" -c "import lra; print(lra.load_task('pathfinder32', '$release').train.num_examples)" \
      2>&1 | tee -a "$out/data.log"
    sweep pathfinder --tasks pathfinder32 --task_config pathfinder32=configs/pathfinder32_short.py \
      --variants luna16,transformer --seeds 1 --runs_per_device 2 --memory_fraction 0.85 \
      -- "$PRECISION"
    ;;
  *)
    echo "unknown part $part: listops, listops_luna256, listops_transformer or pathfinder" >&2
    exit 2
    ;;
esac
echo "$part: $SECONDS s in all; results in $OUT/$part.tgz" | tee -a "$out/machine.txt"
