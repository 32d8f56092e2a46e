"""`gpu`-marked checks of the ops on the CUDA C++ kernels against the torch reference, forward and
backward (dx, dw, dgamma, dbeta, running statistics): conv_bn_relu_cuda on every kind of
Inception-v3 asymmetric conv and an odd one (and a symmetric conv: cuDNN + the BN kernels),
grid_reduction_cuda on Mixed_6a (fused conv + pool) and Mixed_7a's pool slice; and the packed
weight operand taken from fp32 master weights."""
from __future__ import annotations

import pytest
import torch

from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from inception_fast.ops.conv_bn_relu import conv_bn_relu_reference
from inception_fast.ops.grid_reduction import grid_reduction_cuda, grid_reduction_reference
from test_cuda_helpers import DTYPES, assert_lowp_close, bn_params, cl, rel_err

OP_CASES = [  # (N, C_in, C_out, H, W, kernel, stride, padding)
    (4, 128, 128, 17, 17, (1, 7), (1, 1), (0, 3)),
    (4, 128, 192, 17, 17, (7, 1), (1, 1), (3, 0)),
    (4, 160, 160, 17, 17, (1, 7), (1, 1), (0, 3)),
    (4, 384, 384, 8, 8, (1, 3), (1, 1), (0, 1)),
    (4, 384, 384, 8, 8, (3, 1), (1, 1), (1, 0)),
    (4, 64, 96, 35, 35, (3, 3), (1, 1), (1, 1)),   # cuDNN conv + extension BN
    (3, 20, 36, 9, 13, (1, 5), (1, 1), (0, 2)),
    (5, 40, 24, 17, 17, (7, 1), (1, 1), (3, 0)),   # a partial last block of lines
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: f"{c[1]}x{c[3]}_{c[5][0]}x{c[5][1]}")
@pytest.mark.parametrize("training", [True, False])
def test_gpu_conv_bn_relu_cuda_matches_reference(extension, dtype, case, training):
    N, ci, co, h, w, k, s, p = case
    torch.manual_seed(14)
    x0 = cl(torch.randn(N, ci, h, w, device="cuda"))
    w0 = torch.randn(co, ci, *k, device="cuda") / (ci * k[0] * k[1]) ** 0.5
    gamma, beta, rm, rv = bn_params(co, "cuda")
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    gout = torch.randn(N, co + 4, oh, ow, device="cuda")
    results = {}
    for name, fn, dt in (("ours", cbr_cuda.conv_bn_relu_cuda, dtype),
                         ("torch", conv_bn_relu_reference, dtype),
                         ("fp64", conv_bn_relu_reference, torch.float64)):
        x = x0.to(dt).requires_grad_()
        wt = w0.to(dt).requires_grad_()
        g = gamma.to(dt if name == "fp64" else torch.float32).requires_grad_()
        b = beta.to(g.dtype).requires_grad_()
        rm_, rv_ = rm.clone().to(g.dtype), rv.clone().to(g.dtype)
        out = cl(torch.zeros(N, co + 4, oh, ow, device="cuda", dtype=dt))
        fn(x, wt, g, b, rm_, rv_, stride=s, padding=p, eps=1e-3, momentum=0.1,
           training=training, out=out, out_offset=3)
        grads = torch.autograd.grad((out * gout.to(dt)).sum(), (x, wt, g, b))
        results[name] = (out.detach(),) + grads + (rm_, rv_)
    names = ["out", "dx", "dw", "dgamma", "dbeta", "running_mean", "running_var"]
    for i, n in enumerate(names):
        ours, lowp, ref = results["ours"][i], results["torch"][i], results["fp64"][i]
        if dtype == torch.float32:
            # cuDNN may use TF32 for fp32 convs: compare both to fp64 with a TF32-level bound
            assert rel_err(ours, ref) <= max(2 * rel_err(lowp, ref), 1e-4), n
        else:
            assert_lowp_close(ours, lowp, ref, factor=4, floor=1e-4, what=n)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_grid_reduction_cuda_matches_reference(extension, dtype, has_conv, training):
    """Mixed_6a (conv + pool, fused for fp16/bf16) and Mixed_7a's pool slice."""
    torch.manual_seed(15)
    N, ci, co, h, w = 4, 288, 384, 35, 35
    x0 = cl(torch.randn(N, ci, h, w, device="cuda"))
    w0 = torch.randn(co, ci, 3, 3, device="cuda") / (9 * ci) ** 0.5
    gamma, beta, rm, rv = bn_params(co, "cuda")
    gout = torch.randn(N, 768, 17, 17, device="cuda")
    results = {}
    for name, fn, dt in (("ours", grid_reduction_cuda, dtype),
                         ("torch", grid_reduction_reference, dtype),
                         ("fp64", grid_reduction_reference, torch.float64)):
        x = x0.to(dt).requires_grad_()
        wt = w0.to(dt).requires_grad_() if has_conv else None
        g = gamma.to(dt if name == "fp64" else torch.float32).requires_grad_()
        b = beta.to(g.dtype).requires_grad_()
        rm_, rv_ = rm.clone().to(g.dtype), rv.clone().to(g.dtype)
        out = cl(torch.zeros(N, 768, 17, 17, device="cuda", dtype=dt))
        fn(x, wt, g, b, rm_, rv_, out=out, conv_offset=0, pool_offset=480, training=training)
        leaves = (x, wt, g, b) if has_conv else (x,)
        grads = torch.autograd.grad((out * gout.to(dt)).sum(), leaves)
        results[name] = (out.detach(),) + grads
    for i in range(len(results["ours"])):
        ours, lowp, ref = results["ours"][i], results["torch"][i], results["fp64"][i]
        if dtype == torch.float32:
            assert rel_err(ours, ref) <= max(2 * rel_err(lowp, ref), 1e-4), i
        else:
            assert_lowp_close(ours, lowp, ref, factor=4, floor=1e-4, what=f"output {i}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_packed_operand_from_master_weights(extension, dtype):
    """packed= (what the ops pass: the weight cast and packed once per version, here from fp32
    master weights) gives bit for bit what packing inside the binding gives; a wrongly shaped
    packing is refused."""
    torch.manual_seed(34)
    x = cl(torch.randn(2, 32, 17, 17, device="cuda").to(dtype))
    w32 = torch.randn(48, 32, 7, 1, device="cuda") * 0.05
    a = cl(torch.empty(2, 48, 17, 17, device="cuda", dtype=dtype))
    b = torch.empty_like(a)
    extension.asym_conv(x, w32.to(dtype), 3, a, 0)
    extension.asym_conv(x, w32, 3, b, 0, packed=R.pack_weight(w32.to(dtype)))
    assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="packed must be the contiguous"):
        extension.asym_conv(x, w32, 3, b, 0, packed=R.pack_weight(w32.to(dtype))[:6])
    xg = cl(torch.randn(2, 32, 17, 17, device="cuda").to(dtype))
    wg = torch.randn(40, 32, 3, 3, device="cuda") * 0.05
    c = cl(torch.empty(2, 40, 8, 8, device="cuda", dtype=dtype))
    d = torch.empty_like(c)
    extension.grid_reduce(xg, wg.to(dtype), c, 0, None, 0, None)
    extension.grid_reduce(xg, wg, d, 0, None, 0, None, packed=R.pack_weight(wg.to(dtype)))
    assert torch.equal(c, d)
