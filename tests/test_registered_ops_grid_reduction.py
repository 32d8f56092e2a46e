"""The grid-reduction op (ops/grid_reduction.py) as registered torch ops: opcheck of the cuda
path's ops (inception_fast::grid_reduction_cuda_*: schema, fake / meta implementation,
aliasing), and torch.compile(fullgraph=True) of the cuda and triton paths against eager,
outputs and gradients.

CPU only: Triton through its interpreter (conftest.py), the cuda path on the torch stand-in of
its kernels (the ref_kernels fixture). The op writes into `out` and the running statistics, so
it is differentiated through a torch.autograd.Function around the ops, not through registered
autograd (which cannot express a mutated output): opcheck gets inputs that do not require
grad; the gradients are checked by the compile tests below and against the references in
tests/test_cuda_functions.py and tests/test_grid_reduction_triton.py."""
from __future__ import annotations

import pytest
import torch

from helpers import CL, assert_same, eager_and_compiled, gen, in_layout
from inception_fast.ops import grid_reduction_cuda as grc
from inception_fast.ops.grid_reduction import (check_grid_reduction, grid_reduction,
                                               grid_reduction_cuda)
from inception_fast.ops.library import registered_ops

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def test_ops_are_registered():
    ops = {"grid_reduction_cuda_train_fwd", "grid_reduction_cuda_eval_fwd",
           "grid_reduction_cuda_bwd"}
    assert {f"inception_fast::{n}" for n in ops} <= set(registered_ops())


def _grid_inputs(dtype, has_conv, layout, seed=1):
    g = gen(seed)
    x = torch.randn(2, 6, 9, 11, generator=g).to(dtype).contiguous(memory_format=CL)
    w = (torch.randn(5, 6, 3, 3, generator=g) * 0.3).to(dtype) if has_conv else None
    gamma, beta = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g) * 0.2
    rm, rv = torch.randn(5, generator=g) * 0.1, torch.rand(5, generator=g) + 0.5
    out = in_layout(torch.full((2, 15, 4, 5), 5.0, dtype=dtype), layout)
    return x, w, gamma, beta, rm, rv, out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: the fused route
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("save", [True, False])
def test_opcheck_grid_reduction_cuda(ref_kernels, dtype, has_conv, training, save):
    layout = "channels_last" if save else "contiguous"  # contiguous: through a temporary
    x, w, gamma, beta, rm, rv, out = _grid_inputs(dtype, has_conv, layout)
    op = grc.grid_reduction_cuda_train_fwd if training else grc.grid_reduction_cuda_eval_fwd
    args = (x, w, gamma, beta, rm, rv, out, 1, 8, 1e-3, 0.1, training, save)
    torch.library.opcheck(op, args)
    if not save:
        return
    saved = op(*args)
    grad = torch.randn(2, 15, 4, 5, generator=gen(2)).to(dtype)
    for needs in ([True] * 5, [True, False, False, False, False],
                  [False, True, True, True, False], [False] * 4 + [True]):
        torch.library.opcheck(grc.grid_reduction_cuda_bwd,
                              (grad, x, w, *saved, 1, 8, training, needs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_compile_grid_reduction_cuda(ref_kernels, dtype, has_conv, training, grad):
    """backend "cuda" on the csrc_reference kernels (its public dispatcher refuses CPU tensors:
    the checked entry's own checks, then the cuda path)."""
    x, w, gamma, beta, rm, rv, _ = _grid_inputs(dtype, has_conv, "channels_last")

    def fn(x, *rest):
        *params, rm, rv = rest
        w, gamma, beta = params if has_conv else (None, None, None)
        out = torch.full((2, 15, 4, 5), 5.0, dtype=x.dtype).contiguous(memory_format=CL)
        check_grid_reduction(x, w, out, 1, 8)
        grid_reduction_cuda(x, w, gamma, beta, rm, rv, out=out, conv_offset=1, pool_offset=8,
                            training=training)
        return out

    leaves = [x, w, gamma, beta] if has_conv else [x]
    results = eager_and_compiled(fn, leaves, [rm, rv], grad=grad)
    assert_same(results, rtol=1e-5, atol=1e-5)
    out = results[1][0][0]
    assert (out[:, 0] == 5).all() and (out[:, 6:8] == 5).all() and (out[:, 14] == 5).all()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("has_conv", [True, False])
def test_compile_grid_reduction_triton(training, has_conv):
    g = gen(7)
    x = torch.randn(1, 4, 7, 7, generator=g).contiguous(memory_format=CL)
    w = torch.randn(5, 4, 3, 3, generator=g) * 0.3
    gamma, beta = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g) * 0.2
    rm, rv = torch.randn(5, generator=g) * 0.1, torch.rand(5, generator=g) + 0.5

    def fn(x, *rest):
        *params, rm, rv = rest
        w, gamma, beta = params if has_conv else (None, None, None)
        out = torch.zeros(1, 11, 3, 3).contiguous(memory_format=CL)
        grid_reduction(x, w, gamma, beta, rm, rv, out=out, conv_offset=0, pool_offset=7,
                       training=training, backend="triton")
        return out

    leaves = [x, w, gamma, beta] if has_conv else [x]
    assert_same(eager_and_compiled(fn, leaves, [rm, rv]), rtol=1e-5, atol=1e-5)
