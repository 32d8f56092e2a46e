"""The max-pool slice op (ops/max_pool_slice.py) as registered torch ops
(inception_fast::max_pool3x3s2_triton_{fwd,bwd}): torch.library.opcheck on each (schema, fake /
meta implementation, aliasing) and torch.compile(fullgraph=True) against eager. CPU: Triton
through its interpreter (conftest.py).

The op writes into `out`, so it is differentiated through a torch.autograd.Function around
it, not through registered autograd (which cannot express a mutated output): opcheck gets
inputs that do not require grad, and the gradients are checked by the compile test and in
tests/test_pools_kernels.py."""
from __future__ import annotations

import pytest
import torch

from helpers import CL, assert_same, eager_and_compiled, gen, in_layout
from inception_fast.ops.library import registered_ops
from inception_fast.ops.max_pool_slice import (max_pool3x3s2_into, max_pool3x3s2_triton_bwd,
                                               max_pool3x3s2_triton_fwd)

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def test_ops_are_registered():
    assert {"inception_fast::max_pool3x3s2_triton_fwd",
            "inception_fast::max_pool3x3s2_triton_bwd"} <= set(registered_ops())


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("hw", [(9, 7), (3, 3)])
def test_opcheck_max_pool(layout, hw):
    g = gen(0)
    x = in_layout(torch.randn(2, 3, *hw, generator=g), layout)
    oh, ow = (hw[0] - 3) // 2 + 1, (hw[1] - 3) // 2 + 1
    out = in_layout(torch.zeros(2, 7, oh, ow), layout)
    torch.library.opcheck(max_pool3x3s2_triton_fwd, (x, out, 2))
    idx = max_pool3x3s2_triton_fwd(x, out.clone(), 2)
    grad = in_layout(torch.randn(2, 7, oh, ow, generator=g), layout)
    for need_x, need_out in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(max_pool3x3s2_triton_bwd,
                              (grad, idx, 2, list(hw), need_x, need_out))


@pytest.mark.parametrize("grad", [True, False])
def test_compile_max_pool_into_slice(grad):
    def fn(x):
        out = torch.zeros(2, 8, 4, 3).contiguous(memory_format=CL)
        view = max_pool3x3s2_into(x, out, 3, backend="triton")
        return out, view * 2

    x = torch.randn(2, 4, 9, 7, generator=gen(6))
    results = eager_and_compiled(fn, [x], grad=grad)
    assert_same(results, rtol=0, atol=0)
    assert results[1][0][0][:, :3].abs().max() == 0  # the other slices untouched


def test_max_pool_bwd_with_nothing_asked_returns_two_distinct_absents():
    """Two outputs of a registered op may not be one tensor (torch checks aliasing)."""
    x = torch.randn(1, 2, 5, 5).contiguous(memory_format=torch.channels_last)
    out = torch.zeros(1, 2, 2, 2).contiguous(memory_format=torch.channels_last)
    idx = torch.ops.inception_fast.max_pool3x3s2_triton_fwd(x, out, 0)
    gx, gout = torch.ops.inception_fast.max_pool3x3s2_triton_bwd(
        torch.ones_like(out), idx, 0, [5, 5], False, False)
    assert gx.numel() == 0 and gout.numel() == 0 and gx is not gout
