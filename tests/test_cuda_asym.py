"""`gpu`-marked numerics of the asymmetric conv kernel (csrc/asym_conv.cu: fp16 / bf16 on tensor
cores, fp32 on CUDA cores) against fp64 torch: every Inception-v3 1xn / nx1 shape and odd ones
chosen for the tile mapping (GEMM rows over a block's flattened output pixels, lines sharing one
zero gap): lines straddling blocks, a partial last block, Lo < L and Lo > L, one-pixel lines,
2 taps, the longest padded line, C_in not a multiple of 8 (no cp.async) or of 32 (ragged
chunk), C_out not a tile multiple; with BN statistics and 16-byte stores (aligned slice) and
with the folded eval epilogue and element stores (odd slice offset). The index maths are
checked on CPU in tests/test_cuda_tiles.py; the ops' forward + backward in
test_cuda_ops_gpu.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_cuda_helpers import assert_lowp_close, cl

# Every asymmetric conv of Inception-v3 (C_in, C_out, H=W, kernel, pad): Mixed_6b..6e
# (branch7x7 / branch7x7dbl, widths 128 / 160 / 160 / 192), Mixed_7a's branch7x7x3 and
# Mixed_7b / 7c's 1x3 / 3x1 pairs; N = 3 so that a block's lines straddle images.
INCEPTION = sorted({
    *[(3, c, c, 17, 17, k, 3) for c in (128, 160, 192) for k in ((1, 7), (7, 1))],
    *[(3, c, 192, 17, 17, k, 3) for c in (128, 160, 192) for k in ((1, 7), (7, 1))],
    (3, 384, 384, 8, 8, (1, 3), 1), (3, 384, 384, 8, 8, (3, 1), 1),
})
ODD = [  # (N, C_in, C_out, H, W, kernel, pad)
    (3, 20, 36, 9, 13, (1, 5), 2),     # C_in not a multiple of 8: synchronous loads
    (1, 12, 70, 11, 6, (7, 1), 1),     # output shorter than input, C_out not a tile multiple
    (5, 40, 24, 17, 17, (7, 1), 3),    # 85 lines of 7 per block: partial last block; 2 chunks
    (2, 16, 16, 7, 9, (1, 3), 0),      # pad 0: Lo < L
    (2, 16, 8, 5, 6, (3, 1), 3),       # pad 3 with 3 taps: Lo > L
    (4, 8, 16, 5, 1, (1, 3), 1),       # one-pixel lines: lines per block capped by staged rows
    (2, 16, 16, 6, 10, (1, 2), 1),     # 2 taps
    (1, 8, 16, 3, 122, (1, 7), 3),     # the longest padded line: one line per block
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", INCEPTION + ODD, ids=lambda s: (
    f"{s[0]}x{s[1]}to{s[2]}_{s[3]}x{s[4]}_{s[5][0]}x{s[5][1]}p{s[6]}"))
def test_gpu_asym_conv_kernel(extension, dtype, shape):
    N, ci, co, h, w, k, pad = shape
    torch.manual_seed(10)
    x = cl(torch.randn(N, ci, h, w, device="cuda").to(dtype))
    wt = (torch.randn(co, ci, *k, device="cuda") / (ci * k[0] * k[1]) ** 0.5).to(dtype)
    padding = (pad, 0) if k[1] == 1 else (0, pad)
    ref64 = F.conv2d(x.double(), wt.double(), None, 1, padding)
    lowp = F.conv2d(x, wt, None, 1, padding)
    out = cl(torch.full((N, co + 16, *ref64.shape[2:]), 7.0, device="cuda", dtype=dtype))
    s = torch.zeros(co, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.asym_conv(x, wt, pad, out, 8, s, ss)  # offset 8: 16-byte stores where C_out allows
    assert_lowp_close(out[:, 8:8 + co], lowp, ref64, what="asym_conv")
    assert (out[:, :8] == 7).all() and (out[:, 8 + co:] == 7).all()
    torch.testing.assert_close(s, ref64.sum((0, 2, 3)), rtol=1e-3, atol=1e-3 * ref64.numel() ** 0.5)
    torch.testing.assert_close(ss, (ref64 ** 2).sum((0, 2, 3)), rtol=2e-3, atol=1e-2)
    scale = torch.rand(co, device="cuda") + 0.5
    shift = torch.randn(co, device="cuda") * 0.1
    sc, sh = scale.double().view(1, -1, 1, 1), shift.double().view(1, -1, 1, 1)
    extension.asym_conv(x, wt, pad, out, 3, None, None, scale, shift)  # odd: element stores
    assert_lowp_close(out[:, 3:3 + co], F.relu(lowp * sc.to(dtype) + sh.to(dtype)),
                      F.relu(ref64 * sc + sh), what="asym_conv eval epilogue")
    assert (out[:, :3] == 7).all()


@pytest.mark.gpu
def test_gpu_asym_conv_refuses_one_tap(extension):
    x = cl(torch.randn(1, 8, 5, 5, device="cuda", dtype=torch.float16))
    out = cl(torch.empty(1, 8, 5, 5, device="cuda", dtype=torch.float16))
    with pytest.raises(RuntimeError, match="2 to 7 taps"):
        extension.asym_conv(x, torch.randn(8, 8, 1, 1, device="cuda", dtype=torch.float16), 0,
                            out, 0)
