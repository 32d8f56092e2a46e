"""`gpu`-marked checks of the CUDA C++ kernels at every Inception-v3 shape they serve, and of
both access widths of the bandwidth-bound kernels (16-byte vectors where channel counts, slice
offsets and pointers allow, one channel otherwise). Oracle: float64 torch on the same rounded
inputs; low-precision results may err at most twice as much as torch's own (cuDNN in the same
dtype), as in tests/test_cuda_ext.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inception_fast.ops import csrc_reference as R

CL = torch.channels_last

# Every asymmetric conv of Inception-v3 (C_in, C_out, H=W, kernel, pad): Mixed_6b..6e
# (branch7x7 / branch7x7dbl, widths 128 / 160 / 160 / 192), Mixed_7a's branch7x7x3 and
# Mixed_7b / 7c's 1x3 / 3x1 pairs.
ASYM = sorted({
    *[(c, c, 17, k, 3) for c in (128, 160, 192) for k in ((1, 7), (7, 1))],
    *[(c, 192, 17, k, 3) for c in (128, 160, 192) for k in ((1, 7), (7, 1))],
    (384, 384, 8, (1, 3), 1), (384, 384, 8, (3, 1), 1),
})
# The fused grid reduction: Mixed_6a (288 -> 384 at 35x35, with the pool); Mixed_7a's pool
# runs alone (768 channels at 17x17).
GRID = [(288, 384, 35)]
POOL_ALONE = [(768, 17), (288, 35)]


def _cl(t):
    return t.contiguous(memory_format=CL)


def _close(ours, lowp, ref64, factor=2.0, floor=1e-5, what=""):
    scale = ref64.abs().max().item() + 1e-12
    e_ours = (ours.double() - ref64).abs().max().item()
    e_torch = (lowp.double() - ref64).abs().max().item()
    assert e_ours <= factor * e_torch + floor * scale, (
        f"{what}: max error {e_ours:.3g} vs fp64, torch's own {e_torch:.3g}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", ASYM, ids=lambda s: f"{s[0]}to{s[1]}_{s[2]}_{s[3][0]}x{s[3][1]}")
def test_gpu_asym_conv_every_inception_shape(extension, dtype, shape):
    ci, co, hw, k, pad = shape
    N = 3  # lines of a block straddle images
    torch.manual_seed(30)
    x = _cl(torch.randn(N, ci, hw, hw, device="cuda").to(dtype))
    w = (torch.randn(co, ci, *k, device="cuda") / (ci * k[0] * k[1]) ** 0.5).to(dtype)
    padding = (pad, 0) if k[1] == 1 else (0, pad)
    ref64 = F.conv2d(x.double(), w.double(), None, 1, padding)
    lowp = F.conv2d(x, w, None, 1, padding)
    out = _cl(torch.full((N, co + 16, hw, hw), 7.0, device="cuda", dtype=dtype))
    s = torch.zeros(co, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.asym_conv(x, w, pad, out, 8, s, ss)  # an even offset: paired stores
    _close(out[:, 8:8 + co], lowp, ref64, what="asym_conv")
    assert (out[:, :8] == 7).all() and (out[:, 8 + co:] == 7).all()
    torch.testing.assert_close(s, ref64.sum((0, 2, 3)), rtol=1e-3, atol=1e-3 * ref64.numel() ** 0.5)
    torch.testing.assert_close(ss, (ref64 ** 2).sum((0, 2, 3)), rtol=2e-3, atol=1e-2)
    scale = torch.rand(co, device="cuda") + 0.5
    shift = torch.randn(co, device="cuda") * 0.1
    sc, sh = scale.double().view(1, -1, 1, 1), shift.double().view(1, -1, 1, 1)
    extension.asym_conv(x, w, pad, out, 3, None, None, scale, shift)  # odd: single stores
    _close(out[:, 3:3 + co], F.relu(lowp * sc.to(dtype) + sh.to(dtype)), F.relu(ref64 * sc + sh),
           what="asym_conv eval epilogue")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", GRID, ids=lambda s: f"{s[0]}to{s[1]}_{s[2]}")
@pytest.mark.parametrize("n", [1, 5])
def test_gpu_grid_reduce_inception_shape(extension, dtype, shape, n):
    ci, co, hw = shape
    torch.manual_seed(31)
    x = _cl(torch.randn(n, ci, hw, hw, device="cuda").to(dtype))
    w = (torch.randn(co, ci, 3, 3, device="cuda") / (9 * ci) ** 0.5).to(dtype)
    ref64 = F.conv2d(x.double(), w.double(), None, 2)
    pool_t, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    oh = ref64.shape[2]
    out = _cl(torch.zeros(n, co + 96 + ci, oh, oh, device="cuda", dtype=dtype))  # Mixed_6a
    argmax = _cl(torch.empty(n, ci, oh, oh, device="cuda", dtype=torch.uint8))
    s = torch.zeros(co, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.grid_reduce(x, w, out, 0, out, co + 96, argmax, s, ss)
    _close(out[:, :co], F.conv2d(x, w, None, 2), ref64, what="grid conv")
    torch.testing.assert_close(out[:, co + 96:], pool_t, rtol=0, atol=0)
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, hw), rtol=0, atol=0)
    torch.testing.assert_close(s, ref64.sum((0, 2, 3)), rtol=1e-3, atol=1e-3 * ref64.numel() ** 0.5)
    torch.testing.assert_close(ss, (ref64 ** 2).sum((0, 2, 3)), rtol=2e-3, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", POOL_ALONE, ids=lambda s: f"{s[0]}_{s[1]}")
@pytest.mark.parametrize("offset", [8, 3])  # vector path / scalar fallback
def test_gpu_pool_alone_both_widths(extension, dtype, shape, offset):
    c, hw = shape
    torch.manual_seed(32)
    x = _cl(torch.randn(2, c, hw, hw, device="cuda").to(dtype)).requires_grad_()
    pool_t, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    oh = pool_t.shape[2]
    out = _cl(torch.zeros(2, c + 16, oh, oh, device="cuda", dtype=dtype))
    argmax = _cl(torch.empty(2, c, oh, oh, device="cuda", dtype=torch.uint8))
    extension.grid_reduce(x.detach(), None, None, 0, out, offset, argmax)
    torch.testing.assert_close(out[:, offset:offset + c], pool_t.detach(), rtol=0, atol=0)
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, hw), rtol=0, atol=0)
    g = _cl(torch.randn(2, c + 16, oh, oh, device="cuda").to(dtype))
    (dx_t,) = torch.autograd.grad(pool_t, x, g[:, offset:offset + c])
    dx = _cl(torch.empty(x.shape, device="cuda", dtype=dtype))
    extension.maxpool_bwd(g, offset, argmax, dx, False)
    ref = torch.empty(x.shape, dtype=torch.float64, device="cuda")
    R.maxpool_bwd(g.double(), offset, argmax, ref, False)
    _close(dx, dx_t, ref, floor=1e-6, what="maxpool_bwd")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("C,offset", [(192, 8), (192, 3), (36, 4), (37, 0)])
def test_gpu_bn_kernels_both_widths(extension, dtype, C, offset):
    """bn_apply_relu / bn_relu_bwd_* with slice offsets that allow or forbid 16-byte vectors."""
    torch.manual_seed(33)
    N, H, W = 3, 9, 7
    y = _cl((torch.randn(N, C, H, W, device="cuda") * 2 + 0.3).to(dtype))
    scale = torch.rand(C, device="cuda") + 0.5
    shift = torch.randn(C, device="cuda") * 0.3
    mean, invstd = torch.randn(C, device="cuda") * 0.1, torch.rand(C, device="cuda") + 0.5
    out = _cl(torch.full((N, C + 16, H, W), 5.0, device="cuda", dtype=dtype))
    extension.bn_apply_relu(y, scale, shift, out, offset)
    want = out.clone()
    R.bn_apply_relu(y, scale, shift, want, offset)
    torch.testing.assert_close(out, want, rtol=1e-2 if dtype != torch.float32 else 1e-6, atol=1e-5)
    g = _cl(torch.randn(N, C + 16, H, W, device="cuda").to(dtype))
    sums = [torch.zeros(C, dtype=torch.float64, device="cuda") for _ in range(4)]
    extension.bn_relu_bwd_reduce(g, offset, y, scale, shift, mean, invstd, sums[0], sums[1])
    R.bn_relu_bwd_reduce(g, offset, y, scale, shift, mean, invstd, sums[2], sums[3])
    torch.testing.assert_close(sums[0], sums[2], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sums[1], sums[3], rtol=1e-4, atol=1e-3)
    for training in (True, False):
        dy = extension.bn_relu_bwd_apply(g, offset, y, scale, shift, mean, invstd, sums[2],
                                         sums[3], N * H * W, training)
        ref = R.bn_relu_bwd_apply(g.double(), offset, y.double(), scale, shift, mean, invstd,
                                  sums[2], sums[3], N * H * W, training)
        err = ((dy.double() - ref.double()).abs().max() / ref.double().abs().max()).item()
        assert err < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_packed_operand_from_master_weights(extension, dtype):
    """packed= (what the ops pass: the weight cast and packed once per version, here from fp32
    master weights) gives bit for bit what packing inside the binding gives; a wrongly shaped
    packing is refused."""
    torch.manual_seed(34)
    x = _cl(torch.randn(2, 32, 17, 17, device="cuda").to(dtype))
    w32 = torch.randn(48, 32, 7, 1, device="cuda") * 0.05
    a = _cl(torch.empty(2, 48, 17, 17, device="cuda", dtype=dtype))
    b = torch.empty_like(a)
    extension.asym_conv(x, w32.to(dtype), 3, a, 0)
    extension.asym_conv(x, w32, 3, b, 0, packed=R.pack_weight(w32.to(dtype)))
    assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="packed must be the contiguous"):
        extension.asym_conv(x, w32, 3, b, 0, packed=R.pack_weight(w32.to(dtype))[:6])
    xg = _cl(torch.randn(2, 32, 17, 17, device="cuda").to(dtype))
    wg = torch.randn(40, 32, 3, 3, device="cuda") * 0.05
    c = _cl(torch.empty(2, 40, 8, 8, device="cuda", dtype=dtype))
    d = torch.empty_like(c)
    extension.grid_reduce(xg, wg.to(dtype), c, 0, None, 0, None)
    extension.grid_reduce(xg, wg, d, 0, None, 0, None, packed=R.pack_weight(wg.to(dtype)))
    assert torch.equal(c, d)
