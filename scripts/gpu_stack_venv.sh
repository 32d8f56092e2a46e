#!/usr/bin/env bash
# The GPU machine's stack (torch 2.11, Triton 3.6) on this CPU machine, in a venv of its own
# beside CI's: the GPU machine has no package registry, so its Triton's differences (the
# interpreter, the compiler, the cache key) can only be met here first.
#
#   bash scripts/gpu_stack_venv.sh setup     # $VENV: Python 3.12, torch==2.11.*, triton==3.6.*,
#                                            #  numpy<2.4, this repo (`pip install --no-deps -e .`)
#   bash scripts/gpu_stack_venv.sh test      # the kernel tests under that stack (interpreter; every
#                                            #  Triton kernel, forward and backward; ~2-3 min)
#   bash scripts/gpu_stack_venv.sh whole-model    # the 299 whole-model check (~6 min, loaded)
#   bash scripts/gpu_stack_venv.sh warmup [ARGS]  # the Triton cache for the GPU machine (sm_90,
#                                            #  binaries only) compiled by Triton 3.6 into $CACHE
#   bash scripts/gpu_stack_venv.sh all       # setup, then test
#
# VENV (default .venv-gpu-stack; BASE_PYTHON, default python3.12, makes it) and CACHE (default
# .triton-cache-sm90) lie in the repo root and in .gitignore: the cache is keyed on the kernels'
# sources, so it is built right before a GPU run and carried to the device machine (its carry
# list), never committed. Extra args after `test`, `whole-model` and `warmup` go to the command.
# Measured: bench/results/gpu-stack-2026-12-06.md.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv-gpu-stack}"
CACHE="${CACHE:-.triton-cache-sm90}"
# The GPU machine's versions (bench/run_gpu.sh checks the machine's against a cache's manifest).
TORCH_SPEC="${TORCH_SPEC:-torch==2.11.*}"
TRITON_SPEC="${TRITON_SPEC:-triton==3.6.*}"
NUMPY_SPEC="${NUMPY_SPEC:-numpy<2.4}"  # the interpreter's numpy, as in the stack issue 16 tried
# Python 3.12, as on the GPU machine: Triton's cache key hashes libtriton.so, which differs
# between the cp311 and cp312 wheels, so a cache built under 3.11 would never be hit there.
BASE_PYTHON="${BASE_PYTHON:-}"
if [ -z "$BASE_PYTHON" ]; then  # python3.12 on PATH, else pyenv's (as on this machine)
  if python3.12 -V >/dev/null 2>&1; then BASE_PYTHON=python3.12
  else BASE_PYTHON=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 | tail -1); fi
fi
PY="$VENV/bin/python"
# The CUDA extension built against torch 2.11 is not CI's (another ABI): its own build folder,
# and no wait on the lock of a build of CI's stack.
case "$VENV" in /*) VENV_ABS="$VENV" ;; *) VENV_ABS="$PWD/$VENV" ;; esac
export INCEPTION_FAST_EXT_DIR="${INCEPTION_FAST_EXT_DIR:-$VENV_ABS/ext}"

# Every Triton kernel's own tests, forward and backward (the comments name the kernels), plus
# warmup's compile-and-hit tests; ~2-3 min on 2 cores. The whole-model checks are left to
# `whole-model` (each takes minutes in the interpreter).
TESTS=(
  tests/test_kernels_conv_fwd.py     # conv2d_fwd, conv_common, bn_train, avg_pool3x3
  tests/test_kernels_conv_bwd.py     # conv2d_bwd: dgrad, wgrad split-K, last_program
  tests/test_kernels_bn_relu_bwd.py  # bn_relu_bwd + last_program coefficients
  tests/test_grid_reduction_triton.py  # conv3x3s2_pool, max_pool3x3s2 forward
  tests/test_model_pools.py          # max_pool3x3s2 forward and backward (the stem's pools)
  tests/test_conv1x1_multi_ops.py    # conv1x1_multi (+ its torch.compile, opcheck)
  tests/test_losses.py               # label_smoothing_ce, joint_opt_loss
  tests/test_kernels_configs.py      # configs + verdicts (pruning lists, no kernel run)
  tests/test_warmup.py               # warmup: this Triton's compiler + cache key (interpreter off)
  tests/test_gpu_stack_whole_model_check.py  # the whole-model check's max-pool routing
)

# pip, less its warnings about this machine's absent local index folders; pip's exit status kept.
pip_q() { "$PY" -m pip "$@" 2> >(grep -v "is ignored" >&2); }

setup() {
  [ -x "$PY" ] || "$BASE_PYTHON" -m venv "$VENV"
  # The machine-wide pip constraint caps torch at the local store's versions; torch 2.11 comes
  # from PyPI (a cu13 build, whose nvidia-* wheels are only needed to import, never run here).
  PIP_CONSTRAINT= pip_q install -q --upgrade pip
  PIP_CONSTRAINT= pip_q install -q "$TORCH_SPEC" "$TRITON_SPEC" "$NUMPY_SPEC" \
    pytest pybind11 ninja tqdm matplotlib scikit-learn wheel "setuptools>=64"
  # --no-deps: keep exactly the versions above (the project's own pins are CI's).
  INCEPTION_FAST_NO_EXT=1 pip_q install -q --no-deps --no-build-isolation -e .
  "$PY" - <<'EOF'
import numpy, torch, triton
print(f"gpu-stack venv: torch {torch.__version__}, triton {triton.__version__}, numpy {numpy.__version__}")
EOF
}

run_tests() {
  # -p no:cacheprovider: CI's .pytest_cache is not this stack's. One process (shared 2 cores).
  "$PY" -m pytest -p no:cacheprovider -q -o addopts="" -rfEs "${TESTS[@]}" "$@"
}

whole_model() {
  "$PY" -m pytest -p no:cacheprovider -q -o addopts="" -rfEs \
    "tests/test_conv_bn_relu_triton.py::test_inception_v3_299_batch1_eval_and_train_step_match_torch" "$@"
}

warmup() {
  # Interpreter off (warmup refuses it on); the cache relocatable (warmup rewrites its groups)
  # and shrunk to binaries so it travels with the working tree.
  env -u TRITON_INTERPRET "$PY" -m inception_fast warmup --arch 90 --cache-dir "$CACHE" \
    --binary-only "$@"
}

cmd="${1:-all}"; shift || true
case "$cmd" in
  setup) setup ;;
  test) run_tests "$@" ;;
  whole-model) whole_model "$@" ;;
  warmup) warmup "$@" ;;
  all) setup; run_tests "$@" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
