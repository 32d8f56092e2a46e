"""The cuda-backend autograd Functions (conv_bn_relu_cuda, grid_reduction_cuda) run on CPU with
the torch reference kernels (the `ref_kernels` fixture), against conv_bn_relu_reference /
grid_reduction_reference: forward, input / weight / gamma / beta gradients, running
statistics, output slices."""
from __future__ import annotations

import pytest
import torch

from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops.conv_bn_relu import conv_bn_relu_reference
from inception_fast.ops.grid_reduction import grid_reduction_cuda, grid_reduction_reference
from test_cuda_helpers import CL, bn_params


def _run_both(fn_ours, fn_ref, inputs, out_shape, out_mode):
    """Run the op two ways on fresh copies; returns [(out, grads, running)] for ours and ref."""
    results = []
    for fn in (fn_ours, fn_ref):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None
                  for t in inputs["leaves"]]
        rm, rv = inputs["rm"].clone(), inputs["rv"].clone()
        out = None
        if out_mode != "none":
            out = torch.full(out_shape, 5.0, dtype=leaves[0].dtype)
            if out_mode == "channels_last":
                out = out.to(memory_format=CL)
        res = fn(*leaves, rm, rv, out)
        full = res if out is None else out
        gout = torch.randn(full.shape, generator=torch.Generator().manual_seed(9)).to(full.dtype)
        want = [t for t in leaves if t is not None and t.requires_grad]
        grads = torch.autograd.grad((full.float() * gout.float()).sum(), want)
        results.append((full.detach(), grads, (rm, rv)))
    return results


CONV_CASES = [  # (C_in, C_out, H, W, kernel, stride, padding)
    (6, 5, 9, 11, (1, 7), (1, 1), (0, 3)),
    (6, 5, 9, 11, (7, 1), (1, 1), (3, 0)),
    (4, 3, 8, 8, (1, 3), (1, 1), (0, 1)),
    (4, 3, 8, 8, (3, 1), (1, 1), (1, 0)),
    (5, 7, 7, 9, (3, 3), (2, 2), (0, 0)),
    (5, 7, 7, 9, (1, 1), (1, 1), (0, 0)),
    (3, 4, 6, 5, (5, 5), (1, 1), (2, 2)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[4][0]}x{c[4][1]}s{c[5][0]}")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("out_mode", ["none", "channels_last", "contiguous"])
def test_conv_bn_relu_cuda_function_on_cpu(ref_kernels, case, training, out_mode):
    ci, co, h, w, k, s, p = case
    torch.manual_seed(5)
    x = torch.randn(2, ci, h, w, requires_grad=True)
    wt = (torch.randn(co, ci, *k) * 0.3).requires_grad_()
    gamma, beta, rm, rv = bn_params(co)
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1

    def make(fn):
        def run(x, wt, gamma, beta, rm, rv, out):
            return fn(x, wt, gamma, beta, rm, rv, stride=s, padding=p, eps=1e-3, momentum=0.1,
                      training=training, out=out, out_offset=2)
        return run

    inputs = dict(leaves=[x, wt, gamma.requires_grad_(), beta.requires_grad_()], rm=rm, rv=rv)
    ours, ref = _run_both(make(cbr_cuda.conv_bn_relu_cuda), make(conv_bn_relu_reference), inputs,
                          (2, co + 4, oh, ow), out_mode)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[2][0], ref[2][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[2][1], ref[2][1], rtol=1e-5, atol=1e-6)


def test_conv_bn_relu_cuda_two_branches_share_one_output(ref_kernels):
    """Two ops write adjacent slices of one tensor; gradients reach both (copy-free concat)."""
    torch.manual_seed(6)
    outs = []
    for fn in (cbr_cuda.conv_bn_relu_cuda, conv_bn_relu_reference):
        torch.manual_seed(6)
        x = torch.randn(2, 4, 8, 8, requires_grad=True)
        w1 = torch.randn(3, 4, 1, 3, requires_grad=True)
        w2 = torch.randn(5, 4, 3, 1, requires_grad=True)
        ps = [bn_params(3, seed=1), bn_params(5, seed=2)]
        out = torch.empty(2, 8, 8, 8).to(memory_format=CL)
        fn(x, w1, ps[0][0], ps[0][1], ps[0][2], ps[0][3], padding=(0, 1), training=True,
           out=out, out_offset=0)
        fn(x, w2, ps[1][0], ps[1][1], ps[1][2], ps[1][3], padding=(1, 0), training=True,
           out=out, out_offset=3)
        (out * torch.arange(8.0).view(1, -1, 1, 1)).sum().backward()
        outs.append((out.detach(), x.grad, w1.grad, w2.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_grid_reduction_cuda_function_on_cpu(ref_kernels, dtype, has_conv, training):
    """bf16 takes the fused conv+pool route, fp32 the cuDNN-conv + pool-kernel route."""
    torch.manual_seed(7)
    x = torch.randn(2, 6, 9, 11, dtype=dtype, requires_grad=True)
    wt = (torch.randn(5, 6, 3, 3) * 0.3).to(dtype).requires_grad_() if has_conv else None
    gamma, beta, rm, rv = bn_params(5)

    def make(fn):
        def run(x, wt, gamma, beta, rm, rv, out):
            return fn(x, wt, gamma, beta, rm, rv, out=out, conv_offset=1, pool_offset=8,
                      training=training)
        return run

    gamma.requires_grad_(has_conv)  # unused without the conv branch
    beta.requires_grad_(has_conv)
    inputs = dict(leaves=[x, wt, gamma, beta], rm=rm, rv=rv)
    ours, ref = _run_both(make(grid_reduction_cuda), make(grid_reduction_reference), inputs,
                          (2, 15, 4, 5), "channels_last")
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=4e-2)
    torch.testing.assert_close(ours[0].float(), ref[0].float(), **tol)
    assert (ours[0][:, 0] == 5).all() and (ours[0][:, 6:8] == 5).all()  # other slices untouched
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a.float(), b.float(), **tol)
    torch.testing.assert_close(ours[2][0], ref[2][0], rtol=1e-3, atol=1e-3)
