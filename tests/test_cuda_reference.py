"""The torch reference of every CUDA C++ kernel (inception_fast/ops/csrc_reference.py) against
torch's own ops and autograd, on CPU: this pins down the maths each kernel implements (the
oracle of the `gpu` tests in tests/test_cuda_asym.py, test_cuda_grid.py, test_cuda_bn.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from inception_fast.ops.grid_reduction import grid_reduction_reference
from test_cuda_helpers import bn_params


@pytest.mark.parametrize("ties", [False, True])
def test_reference_pool_and_argmax_match_torch(ties):
    torch.manual_seed(0)
    x = torch.randint(0, 3, (2, 5, 9, 11)).float() if ties else torch.randn(2, 5, 9, 11)
    out = torch.full((2, 12, 4, 5), 7.0)
    argmax = torch.empty(2, 5, 4, 5, dtype=torch.uint8)
    R.grid_reduce(x, None, None, 0, out, 4, argmax)
    v, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    torch.testing.assert_close(out[:, 4:9], v, rtol=0, atol=0)
    assert (out[:, :4] == 7).all() and (out[:, 9:] == 7).all()
    assert int(argmax.max()) <= 8
    torch.testing.assert_close(R.pool_tap_from_index(idx, 11), argmax.long(), rtol=0, atol=0)


@pytest.mark.parametrize("hw", [(9, 11), (35, 35), (3, 4)])
def test_reference_maxpool_backward_matches_autograd(hw):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *hw, requires_grad=True)
    v, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    g = torch.randn(2, 6, *v.shape[2:])  # the pool's gradient is channels [2, 5) of a wider one
    (expected,) = torch.autograd.grad(v, x, g[:, 2:5])
    argmax = R.pool_tap_from_index(idx, hw[1]).to(torch.uint8)
    dx = torch.empty(2, 3, *hw)
    R.maxpool_bwd(g, 2, argmax, dx, False)
    torch.testing.assert_close(dx, expected, rtol=1e-6, atol=1e-6)
    base = torch.randn(2, 3, *hw)
    dx = base.clone()
    R.maxpool_bwd(g, 2, argmax, dx, True)
    torch.testing.assert_close(dx, base + expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_reference_bn_kernels_match_torch_batch_norm(training):
    torch.manual_seed(2)
    N, C, H, W = 3, 6, 5, 7
    y = torch.randn(N, C, H, W) * 2 + 0.5
    gamma, beta, rm, rv = bn_params(C)
    count = N * H * W
    if training:
        s = torch.zeros(C, dtype=torch.float64)
        ss = torch.zeros_like(s)
        R.bn_stats(y, s, ss)
        mean, var, invstd, scale, shift = R.bn_finalize(s, ss, count, 1e-3, gamma, beta)
        var_t, mean_t = torch.var_mean(y, (0, 2, 3), unbiased=False)
        torch.testing.assert_close(mean, mean_t, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var, var_t, rtol=1e-5, atol=1e-6)
    else:
        mean, invstd, scale, shift = cbr_cuda.eval_affine(gamma, beta, rm, rv, 1e-3)
    out = torch.zeros(N, C + 3, H, W)
    R.bn_apply_relu(y, scale, shift, out, 2)
    yr = y.clone().requires_grad_()
    gr, br = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
    expected = F.relu(F.batch_norm(yr, rm.clone(), rv.clone(), gr, br, training, 0.1, 1e-3))
    torch.testing.assert_close(out[:, 2:2 + C], expected, rtol=1e-5, atol=1e-5)
    # backward: gradient of the slice, read from a wider gradient tensor at offset 2
    g = torch.randn(N, C + 3, H, W)
    dy_t, dg_t, db_t = torch.autograd.grad(expected, (yr, gr, br), g[:, 2:2 + C])
    sum_g = torch.zeros(C, dtype=torch.float64)
    sum_gx = torch.zeros_like(sum_g)
    R.bn_relu_bwd_reduce(g, 2, y, scale, shift, mean, invstd, sum_g, sum_gx)
    dy = R.bn_relu_bwd_apply(g, 2, y, scale, shift, mean, invstd, sum_g, sum_gx, count, training)
    torch.testing.assert_close(dy, dy_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum_gx.float(), dg_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum_g.float(), db_t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,pad", [((1, 7), 3), ((7, 1), 3), ((1, 3), 1), ((3, 1), 1), ((1, 5), 0)])
def test_reference_asym_conv_epilogues(k, pad):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8, 9)
    w = torch.randn(4, 5, *k) * 0.3
    padding = (pad, 0) if k[1] == 1 else (0, pad)
    y = F.conv2d(x, w, None, 1, padding)
    out = torch.zeros(2, 7, *y.shape[2:])
    s = torch.zeros(4, dtype=torch.float64)
    ss = torch.zeros_like(s)
    R.asym_conv(x, w, pad, out, 1, s, ss)
    torch.testing.assert_close(out[:, 1:5], y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, y.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ss, (y.double() ** 2).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    scale, shift = torch.rand(4) + 0.5, torch.randn(4)
    R.asym_conv(x, w, pad, out, 3, None, None, scale, shift)
    expected = F.relu(y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    torch.testing.assert_close(out[:, 3:7], expected, rtol=1e-5, atol=1e-5)


def test_grid_reduction_reference_is_cat_of_conv_and_pool():
    torch.manual_seed(4)
    x = torch.randn(2, 6, 9, 11)
    w = torch.randn(5, 6, 3, 3) * 0.3
    gamma, beta, rm, rv = bn_params(5)
    other = torch.randn(2, 3, 4, 5)  # the third branch (Mixed_6a's branch3x3dbl)
    out = torch.empty(2, 5 + 3 + 6, 4, 5)
    out[:, 5:8] = other
    grid_reduction_reference(x, w, gamma, beta, rm.clone(), rv.clone(), out=out, conv_offset=0,
                             pool_offset=8, training=False)
    conv = F.relu(F.batch_norm(F.conv2d(x, w, None, 2), rm, rv, gamma, beta, False, 0.1, 1e-3))
    expected = torch.cat([conv, other, F.max_pool2d(x, 3, 2)], 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
