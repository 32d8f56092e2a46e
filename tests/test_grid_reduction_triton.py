"""The Triton grid reduction (Mixed_6a): 3x3/2 conv + 3x3/2 max-pool from one read of the input
windows (kernels/conv3x3s2_pool.py), its op (conv_bn_relu_triton with pool_offset, through
grid_reduction(backend="triton")) against grid_reduction_reference, and the block using it."""
import copy

import pytest
import torch
import torch.nn.functional as F

import inception_fast.nn as ifnn
from helpers import rel_err
from inception_fast.backends import why_unavailable
from inception_fast.kernels import conv_common as cf  # its launch() picks the interpreter's tiles
from inception_fast.kernels.conv2d_fwd import STAT_ROWS, conv2d_fwd
from inception_fast.kernels.max_pool3x3s2 import max_pool3x3s2_fwd
from inception_fast.ops.grid_reduction import grid_reduction, grid_reduction_reference

pytestmark = pytest.mark.skipif(why_unavailable("triton") is not None, reason="needs triton")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
CL = torch.channels_last


@pytest.mark.parametrize("n,ci,h,w,co", [(2, 13, 9, 8, 37), (1, 40, 7, 7, 20), (3, 20, 11, 9, 5)])
@pytest.mark.parametrize("small_tiles", [False, True])
def test_kernel_writes_conv_and_pool_slices(monkeypatch, n, ci, h, w, co, small_tiles):
    """Conv (with the BN-statistics epilogue) and pool into their slices of one tensor, argmax
    equal to the stand-alone pool kernel's (ties to the first tap, NaN wins); the channels in
    between and after stay untouched. small_tiles: 16-wide channel tiles, so several programs
    share each pixel tile and only the first may store the pool (interpreter only)."""
    if small_tiles:
        if DEV == "cuda":
            pytest.skip("tile sizes are forced through the interpreter's launch")
        monkeypatch.setattr(cf, "interpreter_tiles",
                            lambda m, c, k: dict(BLOCK_M=STAT_ROWS, BLOCK_N=16, BLOCK_K=16))
    torch.manual_seed(0)
    x = torch.randn(n, ci, h, w, device=DEV).to(memory_format=CL)
    x[0, 0, 0, 0] = x[0, 0, 0, 1]           # a tie inside the first window
    x[-1, 1, 2, 2] = float("nan")           # NaN wins its windows
    wt = torch.randn(co, ci, 3, 3, device=DEV)
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    full = torch.full((n, co + ci + 5, oh, ow), -7.0, device=DEV).to(memory_format=CL)
    y, psum, _, idx = conv2d_fwd(x, wt, stride=(2, 2), stats=True, out=full[:, :co],
                                 pool_out=full[:, co + 2:co + 2 + ci])
    ref = F.conv2d(x, wt, None, 2)
    finite = torch.isfinite(ref)  # the windows holding the NaN are NaN in both
    assert torch.equal(y.isnan(), ref.isnan())
    assert rel_err(y[finite], ref[finite]) < 1e-5
    pool, idx_ref = max_pool3x3s2_fwd(x)
    assert torch.equal(full[:, co + 2:co + 2 + ci].isnan(), pool.isnan())
    assert torch.equal(torch.nan_to_num(full[:, co + 2:co + 2 + ci]), torch.nan_to_num(pool))
    assert torch.equal(idx, idx_ref)
    assert (full[:, co:co + 2] == -7).all() and (full[:, co + 2 + ci:] == -7).all()
    assert psum.shape == (-(-n * oh * ow // STAT_ROWS), co)


def test_kernel_pool_out_needs_a_3x3_stride2_unpadded_conv():
    x = torch.randn(1, 4, 7, 7, device=DEV)
    pool = torch.empty(1, 4, 3, 3, device=DEV)
    with pytest.raises(ValueError, match="3x3 / stride-2 / unpadded"):
        conv2d_fwd(x, torch.randn(5, 4, 3, 3, device=DEV), stride=(2, 2), padding=(1, 1),
                   pool_out=torch.empty(1, 4, 4, 4, device=DEV))
    with pytest.raises(ValueError, match="pool_out must be"):
        conv2d_fwd(x, torch.randn(5, 4, 3, 3, device=DEV), stride=(2, 2), pool_out=pool[:, :3])


def _bn(co, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(co, generator=g) + 0.5, torch.rand(co, generator=g) - 0.5,
            torch.rand(co, generator=g) * 0.2 - 0.1, torch.rand(co, generator=g) + 0.5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("n,ci,h,w,co", [(2, 13, 9, 8, 37), (3, 24, 7, 11, 16), (1, 5, 5, 5, 8)])
def test_op_equals_reference(training, grad, n, ci, h, w, co):
    """grid_reduction(backend="triton") == grid_reduction_reference: the block output (both
    slices, the rest untouched), running stats, and the input / weight / BN gradients (the pool
    slice's gradient routed to the argmax and added to the conv's input gradient)."""
    torch.manual_seed(1)
    x0 = torch.randn(n, ci, h, w, device=DEV)
    w0 = torch.randn(co, ci, 3, 3, device=DEV) * (9 * ci) ** -0.5
    gamma, beta, rm, rv = (t.to(DEV) for t in _bn(co, 2))
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    gy = torch.randn(n, co + ci + 3, oh, ow, device=DEV)
    res = {}
    for name in ("ours", "ref"):
        x = x0.clone().to(memory_format=CL).requires_grad_(grad)
        wt, g, b = (t.clone().requires_grad_(grad) for t in (w0, gamma, beta))
        m, v = rm.clone(), rv.clone()
        out = torch.full((n, co + ci + 3, oh, ow), 5.0, device=DEV).to(memory_format=CL)
        kw = dict(out=out, conv_offset=1, pool_offset=co + 2, training=training)
        with torch.set_grad_enabled(grad):
            if name == "ours":
                y = grid_reduction(x, wt, g, b, m, v, backend="triton", **kw)
            else:
                y = grid_reduction_reference(x, wt, g, b, m, v, **kw)
        r = {"out": y.detach().clone(), "rm": m, "rv": v}
        if grad:
            (y * gy).sum().backward()
            r.update(gx=x.grad, gw=wt.grad, gg=g.grad, gb=b.grad)
        res[name] = r
    assert (res["ours"]["out"][:, 0] == 5).all() and (res["ours"]["out"][:, co + 1] == 5).all()
    for k, want in res["ref"].items():
        assert rel_err(res["ours"][k], want) < 1e-4, k


def test_mixed_6a_reads_its_input_once(monkeypatch):
    """The fused InceptionB (backend="triton") launches the conv+pool kernel, never the
    stand-alone max-pool, and equals the reference block (train step, eval)."""
    import triton.runtime.interpreter as interp
    import triton.runtime.jit as jit

    names = []
    for cls in (jit.JITFunction, interp.InterpretedFunction):
        orig = cls.run

        def run(self, *a, _orig=orig, **k):
            names.append(getattr(getattr(self, "fn", None), "__name__", "?"))
            return _orig(self, *a, **k)
        monkeypatch.setattr(cls, "run", run)
    torch.manual_seed(0)
    ref = ifnn.InceptionB(16, backend="torch").to(DEV)
    fused = copy.deepcopy(ref).to(DEV)
    for m in fused.modules():
        if isinstance(m, ifnn.ConvBNReLU):
            m.backend = "triton"
    x = torch.randn(2, 16, 7, 7, device=DEV)
    for train in (True, False):
        ref.train(train), fused.train(train)
        names.clear()
        xr, xf = x.clone().requires_grad_(train), x.clone().requires_grad_(train)
        with torch.set_grad_enabled(train):
            yr, yf = ref(xr), fused(xf)
        assert rel_err(yf, yr) < 1e-4
        assert "_conv3x3s2_pool_kernel" in names
        assert "_max_pool3x3s2_fwd_kernel" not in names
        if train:
            g = torch.randn(yr.shape, device=DEV)
            yr.backward(g), yf.backward(g)
            assert rel_err(xf.grad, xr.grad) < 1e-4
