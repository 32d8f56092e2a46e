"""The pool kernels and the max-pool slice op against torch: the 3x3/1 average pool
(kernels/avg_pool3x3.py: into a channel slice, with bias + ReLU and BN statistics, its adjoint),
the 3x3/2 max pool (kernels/max_pool3x3s2.py: ties, its backward) and the max-pool slice op
(ops/max_pool_slice.py) with autograd. On CPU the kernels run in Triton's interpreter."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import CL, close
from inception_fast.kernels.avg_pool3x3 import avg_pool3x3
from inception_fast.kernels.bn_train import bn_finalize
from inception_fast.kernels.max_pool3x3s2 import max_pool3x3s2_bwd, max_pool3x3s2_fwd
from inception_fast.ops.max_pool_slice import max_pool3x3s2_into

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_avg_pool3x3_kernel_slices_stats_and_adjoint():
    g = torch.Generator().manual_seed(1)
    big = torch.randn(3, 20, 7, 5, generator=g).to(DEV).contiguous(memory_format=CL)
    x = big[:, 4:15]  # a channel slice, as the pool unit's columns of the GEMM output
    ref = F.avg_pool2d(x, 3, 1, 1)
    out = torch.zeros(3, 30, 7, 5, device=DEV)
    avg_pool3x3(x, out=out[:, 10:21])
    close(out[:, 10:21], ref, what="avg pool")
    assert out[:, :10].abs().max() == 0 and out[:, 21:].abs().max() == 0
    bias = torch.randn(11, generator=g).to(DEV)
    y, psum, pm2 = avg_pool3x3(x, bias=bias, relu=True, stats=True)
    close(y, torch.relu(ref + bias[None, :, None, None]), what="bias+relu")
    mean, invstd, _, _ = bn_finalize(psum, pm2, 3 * 7 * 5, eps=1e-3, momentum=0.1)
    var, m = torch.var_mean(y.float(), dim=(0, 2, 3), unbiased=False)
    close(mean, m, what="mean")
    close(invstd, torch.rsqrt(var + 1e-3), what="invstd")
    a = torch.randn(2, 3, 6, 4, generator=g).to(DEV)
    b = torch.randn(2, 3, 6, 4, generator=g).to(DEV)
    lhs = (avg_pool3x3(a) * b).sum()
    rhs = (a * avg_pool3x3(b)).sum()
    assert abs(lhs.item() - rhs.item()) < 1e-4  # self-adjoint: the backward is the forward


@pytest.mark.parametrize("hw", [(7, 9), (8, 3), (17, 17)])
def test_max_pool3x3s2_kernel_with_ties(hw):
    g = torch.Generator().manual_seed(2)
    # Small integers: many ties inside windows (torch keeps the first maximum).
    x = torch.randint(-3, 3, (2, 5, *hw), generator=g).float().to(DEV).contiguous(memory_format=CL)
    xr = x.clone().requires_grad_()
    ref = F.max_pool2d(xr, 3, 2)
    out = torch.zeros(2, 9, *ref.shape[2:], device=DEV)
    _, idx = max_pool3x3s2_fwd(x, out=out[:, 3:8])
    close(out[:, 3:8], ref, what="max pool")
    gy = torch.randn(ref.shape, generator=g).to(DEV)
    ref.backward(gy)
    close(max_pool3x3s2_bwd(gy, idx, hw), xr.grad, what="max pool backward")


def test_max_pool_slice_op_autograd():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 9, 9, generator=g).to(DEV)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs = []
    for xx, be in ((xa, "torch"), (xb, "triton")):
        out = torch.zeros(1, 10, 4, 4, device=DEV)
        v = max_pool3x3s2_into(xx, out, 2, backend=be)
        (v * torch.arange(96.0, device=DEV).view(1, 6, 4, 4)).sum().backward()
        outs.append(out)
    close(outs[1], outs[0], what="slice")
    close(xb.grad, xa.grad, what="grad")
    with pytest.raises(ValueError, match="does not fit"):
        max_pool3x3s2_into(x, torch.zeros(1, 7, 4, 4, device=DEV), 2, backend="triton")

