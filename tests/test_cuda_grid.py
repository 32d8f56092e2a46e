"""`gpu`-marked numerics of the grid-reduction kernels: the fused 3x3/2 conv + max-pool
(csrc/grid_reduce.cu, fp16 / bf16) and the pool alone and its backward (csrc/maxpool.cu, every
dtype, 16-byte vectors or one channel) against torch: Mixed_6a's shape and odd ones for the
128-pixel tile (partial row blocks, C_in not a multiple of 8 / 32, C_out not a multiple of 64
with the pool's chunks spread over 2-3 column blocks), pool slices that allow 16-byte stores
or not. The index maths are checked on CPU in tests/test_cuda_tiles.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inception_fast.ops import csrc_reference as R
from test_cuda_helpers import DTYPES, assert_lowp_close, cl

GRID_SHAPES = [  # (N, C_in, C_out, H, W)
    (2, 288, 384, 35, 35),   # Mixed_6a: branch3x3 + pool
    (5, 288, 384, 35, 35),
    (3, 20, 24, 10, 13),     # C_in not a multiple of 8: synchronous loads
    (1, 96, 72, 17, 17),
    (2, 40, 136, 11, 11),    # 2 chunks over 3 column blocks, ragged C_out
    (3, 264, 64, 15, 15),    # 147 pixels: a partial row block; 9 chunks, the last of 8
    (1, 8, 8, 3, 3),         # one output pixel
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", GRID_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}to{s[2]}_{s[3]}x{s[4]}")
@pytest.mark.parametrize("gap", [8, 7])  # pool slice aligned for 16-byte stores, or not
def test_gpu_grid_reduce_fused_kernel(extension, dtype, shape, gap):
    N, ci, co, h, w = shape
    torch.manual_seed(11)
    x = cl(torch.randn(N, ci, h, w, device="cuda").to(dtype))
    wt = (torch.randn(co, ci, 3, 3, device="cuda") / (9 * ci) ** 0.5).to(dtype)
    ref64 = F.conv2d(x.double(), wt.double(), None, 2)
    pool_t, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    oh, ow = ref64.shape[2:]
    out = cl(torch.full((N, co + gap + ci, oh, ow), 3.0, device="cuda", dtype=dtype))
    y = cl(torch.empty(N, co, oh, ow, device="cuda", dtype=dtype))
    argmax = cl(torch.empty(N, ci, oh, ow, device="cuda", dtype=torch.uint8))
    s = torch.zeros(co, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.grid_reduce(x, wt, y, 0, out, co + gap, argmax, s, ss)
    assert_lowp_close(y, F.conv2d(x, wt, None, 2), ref64, what="grid conv")
    torch.testing.assert_close(out[:, co + gap:], pool_t, rtol=0, atol=0)
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, w), rtol=0, atol=0)
    assert (out[:, :co + gap] == 3).all()
    torch.testing.assert_close(s, ref64.sum((0, 2, 3)), rtol=1e-3, atol=1e-3 * ref64.numel() ** 0.5)
    torch.testing.assert_close(ss, (ref64 ** 2).sum((0, 2, 3)), rtol=2e-3, atol=1e-2)
    # eval: BN + ReLU folded into the conv epilogue, written into the same block output
    scale = torch.rand(co, device="cuda") + 0.5
    shift = torch.randn(co, device="cuda") * 0.1
    sc, sh = scale.double().view(1, -1, 1, 1), shift.double().view(1, -1, 1, 1)
    extension.grid_reduce(x, wt, out, 0, out, co + gap, argmax, None, None, scale, shift)
    assert_lowp_close(out[:, :co], F.relu(F.conv2d(x, wt, None, 2) * sc.to(dtype) + sh.to(dtype)),
                      F.relu(ref64 * sc + sh), what="grid conv eval epilogue")
    torch.testing.assert_close(out[:, co + gap:], pool_t, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 768, 17, 17), (2, 288, 35, 35), (3, 5, 10, 7)],
                         ids=lambda s: f"{s[1]}_{s[2]}x{s[3]}")
@pytest.mark.parametrize("offset", [8, 3])  # vector path / one-channel fallback
def test_gpu_pool_kernel_and_backward(extension, dtype, shape, offset):
    torch.manual_seed(12)
    x = cl(torch.randn(*shape, device="cuda").to(dtype)).requires_grad_()
    N, C, H, W = shape
    pool_t, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    oh, ow = pool_t.shape[2:]
    out = cl(torch.zeros(N, C + 16, oh, ow, device="cuda", dtype=dtype))
    argmax = cl(torch.empty(N, C, oh, ow, device="cuda", dtype=torch.uint8))
    extension.grid_reduce(x.detach(), None, None, 0, out, offset, argmax)
    torch.testing.assert_close(out[:, offset:offset + C], pool_t.detach(), rtol=0, atol=0)
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, W), rtol=0, atol=0)
    g = cl(torch.randn(N, C + 16, oh, ow, device="cuda").to(dtype))
    (dx_t,) = torch.autograd.grad(pool_t, x, g[:, offset:offset + C])
    dx = cl(torch.empty(shape, device="cuda", dtype=dtype))
    extension.maxpool_bwd(g, offset, argmax, dx, False)
    dx_ref = torch.empty(shape, dtype=torch.float64, device="cuda")
    R.maxpool_bwd(g.double(), offset, argmax, dx_ref, False)
    assert_lowp_close(dx, dx_t, dx_ref, floor=1e-6, what="maxpool_bwd")
    base = cl(torch.randn(shape, device="cuda").to(dtype))
    dx = base.clone()
    extension.maxpool_bwd(g, offset, argmax, dx, True)
    assert_lowp_close(dx, (base.double() + dx_ref).to(dtype), base.double() + dx_ref, floor=1e-3,
                      what="maxpool_bwd accumulate")
