"""The CUDA C++ extension (csrc/ -> inception_fast._C) as a backend, on CPU: dispatch and error
paths (backend="cuda" without a GPU says why; bad shapes / dtypes), and the extension compiles
and imports wherever a CUDA toolkit and a CUDA build of torch exist. The kernels' numerics are
`gpu`-marked, by family: tests/test_cuda_asym.py, test_cuda_grid.py, test_cuda_bn.py,
test_cuda_ops_gpu.py; their CPU oracles in test_cuda_reference.py / test_cuda_functions.py /
test_cuda_tiles.py."""
from __future__ import annotations

import pytest
import torch

from inception_fast import backends, ext
from inception_fast.backends import BackendUnavailableError
from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from inception_fast.ops.conv_bn_relu import conv_bn_relu
from inception_fast.ops.grid_reduction import grid_reduction
from test_cuda_helpers import HAS_CUDA, bn_params


@pytest.mark.skipif(HAS_CUDA, reason="checks the message given when there is no GPU")
def test_cuda_backend_without_gpu_says_why():
    why = backends.why_unavailable("cuda")
    assert why is not None and "no CUDA GPU" in why
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        backends.check("cuda")


def test_cuda_backend_with_cpu_tensors_is_refused():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(3, 4, 1, 7)
    gamma, beta, rm, rv = bn_params(3)
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors"):
        conv_bn_relu(x, w, gamma, beta, rm, rv, padding=(0, 3), backend="cuda")
    out = torch.empty(1, 7, 3, 3)
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors"):
        grid_reduction(x, None, None, None, None, None, out=out, pool_offset=3, backend="cuda")


def test_cuda_backend_rejects_float64_and_mixed_dtypes():
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(3, 4, 1, 7, dtype=torch.float64)
    gamma, beta, rm, rv = bn_params(3)
    with pytest.raises(TypeError, match="float64"):
        cbr_cuda.conv_bn_relu_cuda(x, w, gamma, beta, rm, rv, padding=(0, 3))
    with pytest.raises(TypeError, match="weight dtype"):
        cbr_cuda.conv_bn_relu_cuda(x.float(), w.half(), gamma, beta, rm, rv, padding=(0, 3))


def test_missing_extension_raises_backend_unavailable(monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("extension not built and cannot be built here: no CUDA toolkit")

    monkeypatch.setattr(ext, "load", fail)
    with pytest.raises(BackendUnavailableError, match="no CUDA toolkit"):
        cbr_cuda.kernels()


def test_eval_without_running_stats_is_an_error(ref_kernels):
    x, w = torch.randn(1, 4, 8, 8), torch.randn(3, 4, 1, 3)
    with pytest.raises(ValueError, match="running_mean"):
        cbr_cuda.conv_bn_relu_cuda(x, w, None, None, None, None, padding=(0, 1), training=False)


def test_training_with_one_value_per_channel_is_an_error(ref_kernels):
    x, w = torch.randn(1, 4, 1, 1), torch.randn(3, 4, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        cbr_cuda.conv_bn_relu_cuda(x, w, None, None, None, None, training=True)


@pytest.mark.parametrize("wshape,stride,padding,hw,expected", [
    ((8, 8, 1, 7), (1, 1), (0, 3), (17, 17), True),
    ((8, 8, 7, 1), (1, 1), (3, 0), (17, 17), True),
    ((8, 8, 1, 3), (1, 1), (0, 1), (8, 8), True),
    ((8, 8, 1, 7), (1, 1), (1, 3), (17, 17), False),   # padding on the other axis too
    ((8, 8, 1, 7), (2, 2), (0, 3), (17, 17), False),   # strided
    ((8, 8, 3, 3), (1, 1), (1, 1), (17, 17), False),   # not asymmetric
    ((8, 8, 1, 9), (1, 1), (0, 4), (17, 17), False),   # more taps than the kernel holds
    ((8, 8, 1, 7), (1, 1), (0, 3), (17, 200), False),  # line longer than the tile
])
def test_asym_conv_dispatch(wshape, stride, padding, hw, expected):
    assert cbr_cuda.use_asym_conv(R, (2, 8) + hw, wshape, stride, padding) is expected


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight=None, pool_offset=None), "nothing to compute"),
    (dict(pool_offset=10), "does not fit"),
    (dict(conv_offset=0, pool_offset=3), "overlap"),
    (dict(weight=torch.randn(5, 6, 1, 3)), "weight must be"),
    (dict(x=torch.randn(2, 6, 2, 9)), "at least 3x3"),
    (dict(out=torch.empty(2, 15, 5, 5)), "expected"),
])
def test_grid_reduction_input_errors(kwargs, match):
    args = dict(x=torch.randn(2, 6, 9, 11), weight=torch.randn(5, 6, 3, 3),
                out=torch.empty(2, 15, 4, 5), conv_offset=1, pool_offset=8)
    args.update(kwargs)
    gamma, beta, rm, rv = bn_params(5)
    with pytest.raises((ValueError, TypeError), match=match):
        grid_reduction(args["x"], args["weight"], gamma, beta, rm, rv, out=args["out"],
                       conv_offset=args["conv_offset"], pool_offset=args["pool_offset"])


# ------------------------------------------------------- the extension compiles and imports here

def test_extension_builds_and_imports(extension):
    for name in ("asym_conv", "grid_reduce", "maxpool_bwd", "bn_stats", "reduce_partials",
                 "bn_finalize", "bn_apply_relu", "bn_relu_bwd_reduce", "bn_relu_bwd_apply"):
        assert callable(getattr(extension, name)), name
    # The Python reference / dispatch use the same tile limits as the C++ kernel.
    assert extension.asym_conv_max_padded_line() == R.asym_conv_max_padded_line()
    assert extension.asym_conv_max_taps() == R.asym_conv_max_taps()


@pytest.mark.skipif(HAS_CUDA, reason="checks the messages for CPU tensors")
def test_extension_rejects_cpu_tensors_clearly(extension):
    s = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="bn_stats: y must be a CUDA tensor"):
        extension.bn_stats(torch.zeros(1, 4, 3, 3), s, s.clone())
    with pytest.raises(RuntimeError, match="asym_conv: input must be a CUDA tensor"):
        extension.asym_conv(torch.zeros(1, 4, 3, 3), torch.zeros(2, 4, 1, 3), 1,
                            torch.zeros(1, 2, 3, 3), 0)
