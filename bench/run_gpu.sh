#!/usr/bin/env bash
# One command on a fresh GPU machine (no package registry needed), built for a 10-minute first
# run that spends its minutes measuring, not compiling:
#   1. the machine: Python, torch, Triton, numpy, GPU, nvcc, cores
#   2. install (pip install --no-deps --no-build-isolation -e .)
#   3. the Triton kernel cache: a cache brought along with the working tree (.triton-cache-sm90,
#      made by scripts/gpu_stack_venv.sh warmup) is used when its manifest names this machine's
#      Triton build and GPU arch; else warmup compiles every variant on all cores first
#   4. the CUDA C++ extension
#   5. measurements, most valuable first: per-layer conv+BN+ReLU vs cuDNN (bf16, train and eval,
#      every distinct layer config, batch 256 then 32); the whole model's images/s vs eager cuDNN,
#      then vs torch.compile; the gpu-marked tests; then blocks and the rest
#   6. a short table (scripts/bench_table.py), and the report
#
#   bash bench/run_gpu.sh                       # compact, time-boxed to ~9.5 minutes
#   bash bench/run_gpu.sh --full                # everything, no time box, far longer
#   bash bench/run_gpu.sh --allow-cpu --dry-run # the plan: stages, cache decision, compile plan
#
# Options: --full, --no-install, --dry-run (check the machine and the cache, print the compile
# plan and the stages; run nothing), --out DIR, --budget SECONDS (default 570), --cache DIR
# (default .triton-cache-sm90), --allow-cpu (no GPU: smoke sizes; to test this script).
# JOBS (default: all cores) sets the compile processes, and the cores the dry run plans for.
# Results: bench/results/<date>-<gpu>/ : results.jsonl (one line per benchmark, written the
# moment it finishes: a run cut short, even killed, keeps what it measured), layers.md,
# summary.txt (the short table), report.md + PNGs, the JSON of each stage, run_gpu.log,
# stages.tsv (each stage's exit code and seconds), machine.txt.
#
# Every stage runs under `timeout -s INT`; a failing stage does not stop the next; the exit
# code is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

FULL=0; INSTALL=1; ALLOW_CPU=0; DRY=0; OUT=""; BUDGET=570; CACHE=.triton-cache-sm90
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1 ;;
    --no-install) INSTALL=0 ;;
    --allow-cpu) ALLOW_CPU=1 ;;
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --cache) CACHE="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run_gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
START=$SECONDS
RESERVE=20  # seconds kept for the table and report at the end of a time-boxed run
JOBS="${JOBS:-$(nproc)}"
# What warmup compiles: what the measurements below launch at 299: the model, and its 43
# distinct conv units on their own (the per-layer benchmarks: outside their blocks they
# specialize differently, e.g. a 1x1 unit is its own GEMM).
WARMUP=(--model inception_v3,layers --size 299 --batch 256,32 --dtype bf16 --mode train,eval
        --jobs "$JOBS")

# ---------------------------------------------------------------- 1. the machine
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
if [ "$DRY" = 1 ]; then
  OUT="${OUT:-$(mktemp -d)}"  # a dry run leaves nothing in bench/results
else
  OUT="${OUT:-bench/results/$(date -u +%F)-$SLUG}"
fi
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run_gpu.log") 2>&1
printf 'stage\texit\tseconds\n' > "$OUT/stages.tsv"
echo "run_gpu.sh: $GPU, $([ $FULL = 1 ] && echo full || echo compact) run$([ $DRY = 1 ] && echo ', dry run'), results in $OUT"
"$PY" - <<'EOF' | tee "$OUT/machine.txt"
import os, platform, shutil, subprocess, sys
import numpy, torch
try:
    import triton
    tv = triton.__version__
except Exception as e:  # reported, not fatal: the cuDNN baselines still run
    tv = f"unavailable ({type(e).__name__}: {e})"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {tv}, numpy {numpy.__version__}, {os.cpu_count()} cores")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
          f"{p.multi_processor_count} SMs, cuDNN {torch.backends.cudnn.version()}")
nvcc = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                if os.environ.get("CUDA_HOME") else None)
if nvcc and os.path.exists(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    print("nvcc", (out.strip().splitlines() or ["?"])[-1])
else:
    print("nvcc: not found (the cuda backend's extension cannot be built)")
EOF

# Build for this GPU's architecture only (half the nvcc time of the default sm_80+sm_90), with
# line info for Nsight Compute's source view, on every core.
ARCH=90
if [ "$GPU" != cpu ]; then
  ARCH=$("$PY" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST="${ARCH:0:${#ARCH}-1}.${ARCH: -1}"
    export TORCH_CUDA_ARCH_LIST
  fi
fi
export INCEPTION_FAST_LINEINFO="${INCEPTION_FAST_LINEINFO:-1}"
export MAX_JOBS="${MAX_JOBS:-$JOBS}"
export PYTHONUNBUFFERED=1
# Each benchmark's result, one JSON line the moment it finishes (scripts/bench_stream.py).
export BENCH_STREAM="$OUT/results.jsonl"
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"

# The stages a GPU runs; a dry run lists them whatever the machine.
GPU_PLAN=0
{ [ "$GPU" != cpu ] || [ "$DRY" = 1 ]; } && GPU_PLAN=1

FAILED=0
left() { echo $(( BUDGET - (SECONDS - START) - RESERVE )); }

# stage NAME PLANNED_SECONDS CMD...: run CMD under a time limit (the planned seconds, or what is
# left of the budget if less; no limit beyond 3 hours in a --full run), record exit code and time.
# A dry run only lists it.
stage() {
  local name="$1" planned="$2"; shift 2
  if [ "$DRY" = 1 ]; then
    printf '  %-22s %4ss ' "$name" "$planned"; printf ' %q' "$@"; echo
    return 0
  fi
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
  echo "=== $name (limit ${limit}s, $((SECONDS - START))s in): $*"
  local t0=$SECONDS rc
  BENCH_STAGE="$name" timeout -s INT -k 30 "$limit" "$@"
  rc=$?
  # pytest: 0 passed, 5 nothing collected (e.g. no gpu tests yet); 124 = ran out of time.
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then
    FAILED=1
    [ $rc -eq 124 ] && echo "=== $name: stopped at its ${limit}s limit (finished results are kept)"
  fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/stages.tsv"
  echo "=== $name: exit $rc after $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- 2. install
if [ "$INSTALL" = 1 ] && [ "$DRY" = 0 ]; then
  # Pure-Python install here; the extension is compiled by build-ext below (its own stage,
  # parallel ninja, a clear error if it fails).
  stage install 120 env INCEPTION_FAST_NO_EXT=1 "$PY" -m pip install --no-deps --no-build-isolation -e .
fi

# ---------------------------------------------------------------- 3. the Triton cache
# A brought cache is used in place only if built by this very Triton (version and the hash of
# its sources and libtriton, which differs per Python version) for this arch: otherwise none of
# its entries could be hit, and warmup fills Triton's default cache instead.
if [ -d "$CACHE" ] && "$PY" -m inception_fast warmup --stack-check --cache-dir "$CACHE" --arch "$ARCH"; then
  export TRITON_CACHE_DIR="$PWD/$CACHE"
  [ "${CACHE:0:1}" = / ] && export TRITON_CACHE_DIR="$CACHE"
  echo "Triton cache: $TRITON_CACHE_DIR (brought along; warmup compiles only what it lacks)"
else
  [ -d "$CACHE" ] || echo "Triton cache: no $CACHE brought along"
  echo "Triton cache: ${TRITON_CACHE_DIR:-~/.triton/cache} (warmup compiles every variant on $JOBS cores)"
fi
if [ "$DRY" = 1 ]; then
  env -u TRITON_INTERPRET "$PY" -m inception_fast warmup --dry-run "${WARMUP[@]}" --arch "$ARCH"
  [ -n "${TRITON_CACHE_DIR:-}" ] && env -u TRITON_INTERPRET "$PY" -m inception_fast warmup --check \
    "${WARMUP[@]}" --arch "$ARCH" --cache-dir "$TRITON_CACHE_DIR"
  echo "stages on a GPU (planned seconds; the ${BUDGET}s time box cuts the later ones):"
fi
# (Not on CPU: the interpreter compiles nothing.)
[ "$GPU_PLAN" = 1 ] && stage warmup 240 env -u TRITON_INTERPRET "$PY" -m inception_fast warmup "${WARMUP[@]}" --arch "$ARCH" --quiet

# ---------------------------------------------------------------- 4. the CUDA C++ extension
[ "$GPU_PLAN" = 1 ] && stage build-ext 150 "$PY" -m inception_fast build-ext

# ---------------------------------------------------------------- 5. measurements
TIMEOUT_OPT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OPT=(--timeout 300)
PYTEST=("$PY" -m pytest -p no:cacheprovider -p bench_stream -q "${TIMEOUT_OPT[@]}")
BENCH=("${PYTEST[@]}" --benchmark-only --benchmark-columns=median,rounds -rs)
OURS=cudnn,triton,cuda,auto
if [ "$FULL" = 1 ]; then
  stage bench-layers 0 "${BENCH[@]}" bench/bench_layers.py --bench-full --benchmark-json "$OUT/layers.json"
  stage bench-model 0 "${BENCH[@]}" bench/bench_model.py --bench-full --benchmark-json "$OUT/model.json"
  stage gpu-tests 0 "${PYTEST[@]}" -m gpu -rs tests/
  stage bench-blocks 0 "${BENCH[@]}" bench/bench_blocks.py --bench-full --benchmark-json "$OUT/blocks.json"
else
  # Every distinct layer config (--bench-full's list) in bf16 against cuDNN, batch 256 first.
  # On CPU the smoke sizes (batch 2, fp32: the interpreter refuses bf16) run instead.
  LAYERS=("${BENCH[@]}" bench/bench_layers.py --bench-full --bench-providers cudnn,triton,cuda
          --bench-rep-ms 30)
  B256=(); B32=()
  [ "$GPU_PLAN" = 1 ] && LAYERS+=(--bench-dtype bf16) && B256=(-k b256) && B32=(-k b32)
  stage layers-b256 150 "${LAYERS[@]}" "${B256[@]}" --benchmark-json "$OUT/layers_b256.json"
  [ "$GPU_PLAN" = 1 ] && stage layers-b32 90 "${LAYERS[@]}" "${B32[@]}" --benchmark-json "$OUT/layers_b32.json"
  stage model 80 "${BENCH[@]}" bench/bench_model.py --bench-providers "$OURS" \
    --bench-model-size 299 --benchmark-json "$OUT/model.json"
  stage model-compile 120 "${BENCH[@]}" bench/bench_model.py --bench-providers compile \
    --bench-model-size 299 --bench-model-compile-mode default --benchmark-json "$OUT/model_compile.json"
  stage gpu-tests 90 "${PYTEST[@]}" -m gpu -rs tests/
  # The rest, as time allows: blocks, the paper's model, torch.compile on a few layers.
  stage blocks 60 "${BENCH[@]}" bench/bench_blocks.py --bench-providers "$OURS" \
    --benchmark-json "$OUT/blocks.json"
  stage model-paper-79 60 "${BENCH[@]}" bench/bench_model.py --bench-providers paper,cudnn,triton \
    --bench-model-size 299 --bench-model-size 79 -k "paper or 79-" --benchmark-json "$OUT/model_more.json"
  stage layers-compile 90 "${BENCH[@]}" bench/bench_layers.py --bench-providers compile \
    -k "Mixed_5b.branch1x1 or Mixed_6e.branch7x7_2 or Mixed_7b.branch3x3dbl_2 or Conv2d_4a_3x3" \
    --benchmark-json "$OUT/layers_compile.json"
fi
if [ "$DRY" = 1 ]; then
  echo "run_gpu.sh --dry-run: nothing was run (JOBS=N plans for N cores)"
  exit 0
fi

# ---------------------------------------------------------------- 6. the table, the report
RESERVE=0
echo
echo "run_gpu.sh: done in $((SECONDS - START))s on $GPU"
column -t -s $'\t' "$OUT/stages.tsv" 2>/dev/null || cat "$OUT/stages.tsv"
JSONS=()
for f in "$OUT"/*.json; do [ -s "$f" ] && JSONS+=("$f"); done
if [ ${#JSONS[@]} -gt 0 ]; then
  stage report 60 "$PY" -m bench.report --json "${JSONS[@]}" --out "$OUT"
  [ -f "$OUT/report.md" ] && echo "report: $OUT/report.md"
else
  echo "=== report: no benchmark JSON was written"; FAILED=1
fi
echo
if [ -s "$BENCH_STREAM" ]; then
  "$PY" scripts/bench_table.py "$BENCH_STREAM" --md "$OUT/layers.md" | tee "$OUT/summary.txt"
else
  echo "no benchmark result was recorded"; FAILED=1
fi
exit $FAILED
