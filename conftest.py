"""Shared pytest setup for tests/ and bench/.

Without a CUDA GPU, Triton kernels run on CPU tensors through Triton's interpreter, which must
be switched on before triton is first imported: that is done here, first thing.

The interpreter's tl.dot is a numpy matmul of one small tile (e.g. 64x1024 @ 1024x64). With
numpy's OpenBLAS on its default thread count, two CPU-bound processes on two cores made each
such call ~40 ms instead of ~0.1 ms (thread hand-off under contention): one BLAS thread, set
before numpy loads (torch imports it), is a test-speed measure only (the same fp32 matmul)
and the variable can still be overridden from the environment."""
import os
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


# The Triton versions (major, minor; inclusive) whose interpreter was checked to sum as
# patch_interpreter_pairwise_sum describes (triton.runtime.interpreter.ReduceOps.sum a plain
# np.sum over the axis). Another version is left unpatched, with a warning: check its
# interpreter, then widen the range (or drop the patch if the interpreter sums pairwise).
PAIRWISE_SUM_TRITON = ((3, 6), (3, 8))


def patch_interpreter_pairwise_sum() -> bool:
    """The one patch of Triton's interpreter here (test numerics only; returns whether it is in
    force). The interpreter's tl.sum is np.sum over the reduced axis; over a non-last axis
    numpy adds the rows one after another, so summing 128 equal fp32 values is off by ~2e-6
    relative, where the GPU's tree reduction (and numpy's pairwise sum along the contiguous
    last axis) is off by ~1e-7. BN backward sums of a pixel-constant gradient (after the global
    average pool) hit exactly that, 20x worse than torch. Reduce along a contiguous copy
    instead: same values, pairwise order. Floating point only; only on the Triton versions of
    PAIRWISE_SUM_TRITON, and a no-op if the interpreter is laid out differently."""
    try:
        import numpy as np
        import triton
        from triton.runtime import interpreter
    except ImportError:
        return False
    version = tuple(int(p) for p in triton.__version__.split(".")[:2] if p.isdigit())
    lo, hi = PAIRWISE_SUM_TRITON
    if not lo <= version <= hi:
        warnings.warn(f"conftest.py: Triton {triton.__version__}'s interpreter is not patched to "
                      f"sum pairwise (checked on {lo} to {hi}: see PAIRWISE_SUM_TRITON)")
        return False
    ops = getattr(interpreter, "ReduceOps", None)
    orig = getattr(ops, "sum", None)
    if orig is None or getattr(orig, "_pairwise", False):
        return orig is not None

    def pairwise_sum(self, input):
        data = getattr(getattr(input, "handle", None), "data", None)
        axis = getattr(self, "axis", None)
        if (not isinstance(data, np.ndarray) or not isinstance(axis, int) or data.ndim < 2
                or data.dtype.kind != "f"):
            return orig(self, input)
        out = np.sum(np.ascontiguousarray(np.moveaxis(data, axis, -1)), axis=-1)
        if self.keep_dims:
            out = np.expand_dims(out, axis)
        return self.to_tensor(out, input.dtype)

    pairwise_sum._pairwise = True
    ops.sum = pairwise_sum
    return True


if os.environ.get("TRITON_INTERPRET") == "1":
    patch_interpreter_pairwise_sum()


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true",
                     help="run the benchmark suite: the same as `pytest bench/ --benchmark-only` "
                          "(CPU smoke sizes without a GPU, the compact set with one)")


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure reads the option
def pytest_configure(config):
    """--benchmark: --benchmark-only, over bench/ when no paths were given (the testpaths)."""
    if not config.getoption("benchmark", False):
        return
    config.option.benchmark_only = True
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        config.args = [str(config.rootpath / "bench")]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
