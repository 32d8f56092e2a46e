"""`gpu`-marked numerics of the BatchNorm kernels (csrc/bn_reduce.cu, csrc/bn_apply.cu) against
their torch reference (inception_fast/ops/csrc_reference.py), every dtype, with slice offsets
and channel counts that allow 16-byte vectors (offset 8, C a multiple of 8) or forbid them
(offset 3, C = 37)."""
from __future__ import annotations

import pytest
import torch

from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from test_cuda_helpers import CL, DTYPES, bn_params, cl, rel_err


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 192, 17, 17), (3, 37, 5, 9), (3, 36, 9, 7)],
                         ids=lambda s: f"{s[1]}_{s[2]}x{s[3]}")
@pytest.mark.parametrize("offset", [8, 3])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_bn_kernels(extension, dtype, shape, offset, training):
    torch.manual_seed(13)
    N, C, H, W = shape
    y = cl((torch.randn(shape, device="cuda") * 2 + 0.3).to(dtype))
    gamma, beta, rm, rv = bn_params(C, "cuda")
    count = N * H * W
    s = torch.zeros(C, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.bn_stats(y, s, ss)
    torch.testing.assert_close(s, y.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ss, (y.double() ** 2).sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
    st = extension.bn_finalize(s, ss, count, 1e-3, gamma, beta)
    torch.testing.assert_close(st, R.bn_finalize(s, ss, count, 1e-3, gamma, beta), rtol=1e-5,
                               atol=1e-6)
    mean, var, invstd, scale, shift = st.unbind(0)
    if not training:
        mean, invstd, scale, shift = cbr_cuda.eval_affine(gamma, beta, rm, rv, 1e-3)
    out = cl(torch.full((N, C + 16, H, W), 5.0, device="cuda", dtype=dtype))
    extension.bn_apply_relu(y, scale.contiguous(), shift.contiguous(), out, offset)
    expected = out.clone()
    R.bn_apply_relu(y, scale, shift, expected, offset)
    torch.testing.assert_close(out, expected, rtol=1e-2 if dtype != torch.float32 else 1e-5,
                               atol=1e-5)
    g = cl(torch.randn(N, C + 16, H, W, device="cuda").to(dtype))
    args = [t.contiguous() for t in (scale, shift, mean, invstd)]
    sums = [torch.zeros(C, dtype=torch.float64, device="cuda") for _ in range(4)]
    extension.bn_relu_bwd_reduce(g, offset, y, *args, sums[0], sums[1])
    R.bn_relu_bwd_reduce(g, offset, y, *args, sums[2], sums[3])
    torch.testing.assert_close(sums[0], sums[2], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sums[1], sums[3], rtol=1e-4, atol=1e-3)
    dy = extension.bn_relu_bwd_apply(g, offset, y, *args, sums[2], sums[3], count, training)
    dy_ref = R.bn_relu_bwd_apply(g.double(), offset, y.double(), *args, sums[2], sums[3], count,
                                 training)
    assert dy.dtype == dtype and dy.is_contiguous(memory_format=CL)
    assert rel_err(dy, dy_ref) < (1e-5 if dtype == torch.float32 else 1e-2)
