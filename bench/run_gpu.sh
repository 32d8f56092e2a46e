#!/usr/bin/env bash
# One command on a fresh GPU machine (no package registry needed): install, build the CUDA C++
# extension, run the gpu-marked tests, run the benchmarks, write the report.
#
#   bash bench/run_gpu.sh            # compact set, whole run time-boxed to ~9.5 minutes
#   bash bench/run_gpu.sh --full     # everything (every layer config, block, batch, dtype,
#                                    #  torch.compile everywhere): no time box, far longer
#
# Options: --full, --no-install (already installed), --out DIR, --budget SECONDS (compact time
# box, default 570), --allow-cpu (run anyway without a GPU: smoke sizes; to test this script).
# Results: bench/results/<date>-<gpu>/ : report.md, *.png, the JSON of each benchmark run,
# run_gpu.log (everything printed) and stages.tsv (each stage's exit code and seconds).
#
# Every stage runs under `timeout -s INT`: an interrupted pytest still writes the benchmarks it
# finished into its JSON, so a stage that runs out of time loses only what it had not reached.
# A failing stage does not stop the next; the exit code is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

FULL=0; INSTALL=1; ALLOW_CPU=0; OUT=""; BUDGET=570
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1 ;;
    --no-install) INSTALL=0 ;;
    --allow-cpu) ALLOW_CPU=1 ;;
    --out) OUT="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run_gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
START=$SECONDS
RESERVE=25  # seconds kept for the report at the end of a time-boxed run

if ! GPU=$("$PY" -c "import torch, sys; sys.exit(1) if not torch.cuda.is_available() else print(torch.cuda.get_device_name())"); then
  if [ "$ALLOW_CPU" = 1 ]; then
    GPU=cpu
    echo "run_gpu.sh: no CUDA GPU: running the CPU smoke sizes (--allow-cpu). GPU numbers need a GPU."
  else
    echo "run_gpu.sh: no CUDA GPU visible to $PY (torch.cuda.is_available() is False)." >&2
    echo "            Pass --allow-cpu to run the CPU smoke sizes anyway." >&2
    exit 1
  fi
fi
SLUG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
OUT="${OUT:-bench/results/$(date -u +%F)-$SLUG}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run_gpu.log") 2>&1
printf 'stage\texit\tseconds\n' > "$OUT/stages.tsv"
echo "run_gpu.sh: $GPU, $([ $FULL = 1 ] && echo full || echo compact) run, results in $OUT"

# Build for this GPU's architecture only (half the nvcc time of the default sm_80+sm_90), with
# line info for Nsight Compute's source view, on every core.
if [ "$GPU" != cpu ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  export TORCH_CUDA_ARCH_LIST
fi
export INCEPTION_FAST_LINEINFO="${INCEPTION_FAST_LINEINFO:-1}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONUNBUFFERED=1

FAILED=0
left() { echo $(( BUDGET - (SECONDS - START) - RESERVE )); }

# stage NAME PLANNED_SECONDS CMD...: run CMD under a time limit (the planned seconds, or what is
# left of the budget if less; no limit beyond 3 hours in a --full run), record exit code and time.
stage() {
  local name="$1" planned="$2"; shift 2
  local limit="$planned"
  if [ "$FULL" = 1 ]; then
    limit=10800
  else
    local rest; rest=$(left)
    [ "$rest" -lt "$limit" ] && limit="$rest"
    if [ "$limit" -lt 15 ]; then
      echo "=== $name: skipped, the ${BUDGET}s time box is used up"
      printf '%s\tskipped\t0\n' "$name" >> "$OUT/stages.tsv"
      return 0
    fi
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS rc
  timeout -s INT -k 30 "$limit" "$@"
  rc=$?
  # pytest: 0 passed, 5 nothing collected (e.g. no gpu tests yet); 124 = ran out of time.
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then
    FAILED=1
    [ $rc -eq 124 ] && echo "=== $name: stopped at its ${limit}s limit (finished benchmarks are kept)"
  fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/stages.tsv"
  echo "=== $name: exit $rc after $((SECONDS - t0))s"
}

if [ "$INSTALL" = 1 ]; then
  # Pure-Python install here; the extension is compiled by build-ext below (its own stage,
  # parallel ninja, a clear error if it fails).
  stage install 120 env INCEPTION_FAST_NO_EXT=1 "$PY" -m pip install --no-deps --no-build-isolation -e .
fi
stage info 60 "$PY" -m inception_fast info
[ "$GPU" != cpu ] && stage build-ext 240 "$PY" -m inception_fast build-ext

TIMEOUT_OPT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OPT=(--timeout 300)
PYTEST=("$PY" -m pytest -p no:cacheprovider -q "${TIMEOUT_OPT[@]}")
stage gpu-tests 120 "${PYTEST[@]}" -m gpu -rs tests/

BENCH=("${PYTEST[@]}" --benchmark-only --benchmark-columns=median,rounds -rs)
if [ "$FULL" = 1 ]; then
  stage bench-layers 0 "${BENCH[@]}" bench/bench_layers.py --bench-full --benchmark-json "$OUT/layers.json"
  stage bench-blocks 0 "${BENCH[@]}" bench/bench_blocks.py --bench-full --benchmark-json "$OUT/blocks.json"
  stage bench-model 0 "${BENCH[@]}" bench/bench_model.py --bench-full --benchmark-json "$OUT/model.json"
else
  # Most telling first: ours against cuDNN per layer, the whole model, the blocks; then
  # torch.compile (max-autotune spends minutes compiling) on a few layers and the model.
  OURS=cudnn,triton,cuda,auto
  stage bench-layers 100 "${BENCH[@]}" bench/bench_layers.py --bench-providers "$OURS" \
    --benchmark-json "$OUT/layers.json"
  stage bench-model 80 "${BENCH[@]}" bench/bench_model.py --bench-providers "$OURS,paper" \
    --benchmark-json "$OUT/model.json"
  stage bench-blocks 70 "${BENCH[@]}" bench/bench_blocks.py --bench-providers "$OURS" \
    --benchmark-json "$OUT/blocks.json"
  stage bench-layers-compile 90 "${BENCH[@]}" bench/bench_layers.py --bench-providers compile \
    -k "Mixed_5b.branch1x1 or Mixed_6e.branch7x7_2 or Mixed_7b.branch3x3dbl_2 or Conv2d_4a_3x3" \
    --benchmark-json "$OUT/layers_compile.json"
  stage bench-model-compile 150 "${BENCH[@]}" bench/bench_model.py --bench-providers compile \
    --bench-model-size 299 --bench-model-compile-mode default --benchmark-json "$OUT/model_compile.json"
fi

JSONS=()
for f in "$OUT"/*.json; do [ -s "$f" ] && JSONS+=("$f"); done
if [ ${#JSONS[@]} -gt 0 ]; then
  RESERVE=0
  stage report 60 "$PY" -m bench.report --json "${JSONS[@]}" --out "$OUT"
else
  echo "=== report: no benchmark JSON was written"; FAILED=1
fi

echo
echo "run_gpu.sh: done in $((SECONDS - START))s on $GPU"
column -t -s $'\t' "$OUT/stages.tsv" 2>/dev/null || cat "$OUT/stages.tsv"
[ -f "$OUT/report.md" ] && echo "report: $OUT/report.md"
exit $FAILED
