"""The forward Triton kernels on their own: kernels/conv2d_fwd.py (the implicit GEMM of every
filter shape, 1xn / nx1 included, and its epilogues), kernels/bn_train.py (statistics finalize
and the BN+ReLU apply), against torch."""
import pytest
import torch
import torch.nn.functional as F

from helpers import rel_err
from inception_fast.backends import why_unavailable
from inception_fast.kernels import bn_train as bn_train_module
from inception_fast.kernels import conv_common
from inception_fast.kernels import conv2d_fwd as conv2d_fwd_module
from inception_fast.kernels.bn_train import bn_finalize, bn_relu_apply
from inception_fast.kernels.configs import CONV_FWD, KEEP, gpu_configs
from inception_fast.kernels.conv2d_fwd import (STAT_ROWS, conv2d_fwd, pack_weight,
                                             prune_configs)

pytestmark = [pytest.mark.skipif(why_unavailable("triton") is not None,
                                 reason=f"triton backend unavailable: {why_unavailable('triton')}"),
              pytest.mark.usefixtures("exact_fp32")]  # on a GPU: fp32 vs fp32, TF32 off
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rows(y):
    """(N, C, H, W) -> [N*H*W, C], rows in the kernels' (n, oh, ow) order."""
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])


CONVS = [  # (N, C_in, H, W, C_out, kernel, stride, padding): generic, FLAT_K and asym paths
    (2, 3, 11, 10, 32, (3, 3), (2, 2), (0, 0)),
    (1, 13, 7, 9, 37, (3, 3), (1, 1), (1, 1)),
    (3, 20, 6, 5, 5, (1, 1), (1, 1), (0, 0)),
    (2, 24, 7, 7, 17, (5, 5), (1, 1), (2, 2)),
    (2, 40, 9, 8, 24, (3, 3), (2, 2), (0, 0)),
    (2, 24, 6, 7, 20, (1, 7), (1, 1), (0, 3)),
    (2, 24, 7, 6, 20, (7, 1), (1, 1), (3, 0)),
    (3, 16, 5, 4, 9, (1, 3), (1, 1), (0, 1)),
    (1, 16, 5, 4, 9, (3, 1), (1, 1), (1, 0)),
    (2, 5, 6, 7, 6, (1, 7), (1, 1), (0, 3)),  # asym shape, tiny C_in: generic FLAT_K path
    (2, 16, 9, 7, 8, (3, 1), (2, 2), (1, 0)),  # asym with stride 2
    (2, 8, 5, 5, 40, (5, 5), (1, 1), (0, 0)),  # 1x1 output
]


@pytest.mark.parametrize("n,ci,h,w,co,k,s,p", CONVS)
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_conv_plain_and_stats(n, ci, h, w, co, k, s, p, layout):
    torch.manual_seed(0)
    x = torch.randn(n, ci, h, w, device=DEV)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    wt = torch.randn(co, ci, *k, device=DEV)
    ref = F.conv2d(x, wt, None, s, p)
    y = conv2d_fwd(x, wt, stride=s, padding=p)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, ref) < 1e-5
    y2, psum, pm2 = conv2d_fwd(x, wt, stride=s, padding=p, stats=True)
    assert rel_err(y2, ref) < 1e-5
    r = rows(ref.double())
    groups = -(-r.shape[0] // STAT_ROWS)
    assert psum.shape == pm2.shape == (groups, co)
    for g in range(groups):
        blk = r[g * STAT_ROWS:(g + 1) * STAT_ROWS]
        assert torch.allclose(psum[g].double(), blk.sum(0), rtol=1e-4, atol=1e-3)
        m2 = (blk - blk.mean(0)).square().sum(0)
        assert torch.allclose(pm2[g].double(), m2, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("n,ci,h,w,co,k,s,p", CONVS[::2])
def test_conv_bias_relu_into_slice(n, ci, h, w, co, k, s, p):
    """Eval epilogue: relu(conv + bias) stored into a channel slice; the rest is untouched."""
    torch.manual_seed(1)
    x = torch.randn(n, ci, h, w, device=DEV).to(memory_format=torch.channels_last)
    wt = torch.randn(co, ci, *k, device=DEV)
    b = torch.randn(co, device=DEV)
    ref = F.relu(F.conv2d(x, wt, b, s, p))
    full = torch.full((n, co + 7, *ref.shape[2:]), -3.0, device=DEV)
    full = full.to(memory_format=torch.channels_last)
    y = conv2d_fwd(x, wt, stride=s, padding=p, bias=b, relu=True, out=full[:, 4:4 + co],
                   packed=pack_weight(wt))
    assert y.data_ptr() == full[:, 4:].data_ptr()
    assert rel_err(full[:, 4:4 + co], ref) < 1e-5
    assert (full[:, :4] == -3).all() and (full[:, 4 + co:] == -3).all()


@pytest.mark.skipif(DEV == "cuda", reason="tile sizes forced through the interpreter's launch")
@pytest.mark.parametrize("n,ci,h,w,co,k,s,p", [
    (3, 13, 5, 7, 37, (1, 7), (1, 1), (0, 3)), (3, 20, 5, 4, 37, (7, 1), (1, 1), (3, 0)),
    (1, 20, 9, 9, 9, (3, 1), (1, 1), (1, 0)), (2, 40, 3, 5, 9, (1, 3), (2, 1), (0, 1)),
    (2, 36, 7, 6, 20, (3, 3), (1, 1), (1, 1)), (1, 17, 9, 8, 9, (5, 5), (2, 2), (2, 2))])
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_flat_k_loop_with_many_small_tiles(monkeypatch, n, ci, h, w, co, k, s, p, layout):
    """16-channel K steps and STAT_ROWS-row tiles (the smallest the BN partials allow): the one
    (channel block, tap) loop crosses channel-block tails, every tap's padding, tile, line and
    image boundaries; with the statistics epilogue, against torch."""
    launched = []
    orig = conv2d_fwd_module._conv2d_fwd_kernel.fn.run
    monkeypatch.setattr(conv2d_fwd_module._conv2d_fwd_kernel.fn, "run",
                        lambda *a, **kw: (launched.append(kw["BLOCK_K"]), orig(*a, **kw))[1])
    monkeypatch.setattr(conv_common, "interpreter_tiles",
                        lambda m, c, kk: dict(BLOCK_M=STAT_ROWS, BLOCK_N=16, BLOCK_K=16))
    torch.manual_seed(1)
    x = torch.randn(n, ci, h, 2 * w)[..., ::2] if layout == "strided" else \
        torch.randn(n, ci, h, w).to(memory_format=torch.channels_last)
    wt = torch.randn(co, ci, *k)
    ref = F.conv2d(x, wt, None, s, p)
    y, psum, _ = conv2d_fwd(x, wt, stride=s, padding=p, stats=True)
    assert launched == [16]
    assert rel_err(y, ref) < 1e-5
    r = rows(ref.double())
    for g in range(psum.shape[0]):
        assert torch.allclose(psum[g].double(), r[g * STAT_ROWS:(g + 1) * STAT_ROWS].sum(0),
                              rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("count,c,offset", [(150, 5, 0.0), (11000, 3, 50.0), (40000, 2, 0.0)])
def test_bn_finalize(count, c, offset, monkeypatch):
    """Partials from the conv epilogue -> mean, invstd, a, c and running stats as torch, in one
    launch. The largest count (over 256 groups) merges chunks in parallel and the last program
    of each channel block merges the chunks; a second call (arrival counters reset by the
    last program) gives the same statistics."""
    torch.manual_seed(2)
    x = torch.randn(1, 4, 1, count, device=DEV) + offset  # one row per output pixel
    wt = torch.randn(c, 4, 1, 1, device=DEV)
    y, psum, pm2 = conv2d_fwd(x, wt, stats=True)
    y64 = rows(F.conv2d(x.double(), wt.double()))
    gamma, beta = torch.rand(c, device=DEV) + 0.5, torch.randn(c, device=DEV)
    rm, rv = torch.randn(c, device=DEV), torch.rand(c, device=DEV) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    grids = []
    kern = bn_train_module._bn_finalize_kernel
    monkeypatch.setattr(bn_train_module, "_bn_finalize_kernel", type(
        "Counted", (), {"__getitem__": lambda self, g: (grids.append(g), kern[g])[1]})())
    mean, invstd, a, cc = bn_finalize(psum, pm2, count, eps=1e-3, momentum=0.1, gamma=gamma,
                                      beta=beta, running_mean=rm, running_var=rv)
    groups = psum.shape[0]
    assert len(grids) == 1 and grids[0][1] == (-(-groups // 128) if groups > 256 else 1)
    again = bn_finalize(psum, pm2, count, eps=1e-3, momentum=0.1)
    assert torch.equal(again[0], mean) and torch.equal(again[1], invstd)
    m64, v64 = y64.mean(0), y64.var(0, unbiased=False)
    assert rel_err(mean, m64) < 1e-5
    assert rel_err(invstd, (v64 + 1e-3).rsqrt()) < 1e-4
    assert rel_err(a, gamma * invstd) < 1e-6
    assert rel_err(cc, beta - mean * a) < 1e-5
    assert rel_err(rm, 0.9 * rm0 + 0.1 * m64) < 1e-5
    assert rel_err(rv, 0.9 * rv0 + 0.1 * y64.var(0, unbiased=True)) < 1e-4


def test_bn_finalize_in_segments_is_one_finalize_per_segment():
    """A horizontal 1x1 group's BN layers (3 segments, bf16 running stats on one, a trailing
    column past them) in one launch: as finalizing each segment's columns alone."""
    torch.manual_seed(5)
    count, sizes, c = 11000, (2, 3, 1), 7
    x = torch.randn(1, 4, 1, count, device=DEV) + 3.0
    y, psum, pm2 = conv2d_fwd(x, torch.randn(c, 4, 1, 1, device=DEV), stats=True)
    segs = lambda f: [f(s) for s in sizes]  # noqa: E731
    gamma, beta = segs(lambda s: torch.rand(s, device=DEV) + 0.5), segs(lambda s: torch.randn(s, device=DEV))
    rm = segs(lambda s: torch.randn(s, device=DEV))
    rv = segs(lambda s: torch.rand(s, device=DEV) + 0.5)
    rm[1], rv[1] = rm[1].bfloat16(), rv[1].bfloat16()
    rm_ref, rv_ref = [t.clone() for t in rm], [t.clone() for t in rv]
    mean, invstd, a, cc = bn_finalize(psum, pm2, count, eps=1e-3, momentum=0.1, gamma=gamma,
                                      beta=beta, running_mean=rm, running_var=rv)
    lo = 0
    for i, s in enumerate(sizes):
        col = slice(lo, lo + s)
        ref = bn_finalize(psum[:, col].contiguous(), pm2[:, col].contiguous(), count, eps=1e-3,
                          momentum=0.1, gamma=gamma[i], beta=beta[i], running_mean=rm_ref[i],
                          running_var=rv_ref[i])
        for got, want in zip((mean, invstd, a, cc), ref):
            assert torch.allclose(got[col], want, rtol=1e-6, atol=1e-6)
        assert rm[i].dtype == rm_ref[i].dtype and torch.equal(rm[i], rm_ref[i])
        assert torch.equal(rv[i], rv_ref[i])
        lo += s
    # The trailing column: gamma 1, beta 0.
    assert torch.allclose(a[6:], invstd[6:]) and torch.allclose(cc[6:], -mean[6:] * invstd[6:])
    with pytest.raises(ValueError, match="segment sizes"):
        bn_finalize(psum, pm2, count, eps=1e-3, momentum=0.1, gamma=gamma, beta=beta[:2])
    with pytest.raises(ValueError, match="1 to 4 segments"):
        bn_finalize(psum, pm2, count, eps=1e-3, momentum=0.1, gamma=gamma * 2, beta=beta * 2)


def test_bn_finalize_errors():
    p = torch.zeros(2, 3, device=DEV)
    with pytest.raises(ValueError, match="more than 1 value"):
        bn_finalize(p[:1], p[:1], 1, eps=1e-3, momentum=0.1)
    with pytest.raises(ValueError, match="do not cover"):
        bn_finalize(p, p, 10, eps=1e-3, momentum=0.1)
    with pytest.raises(ValueError, match="running_mean"):  # 2 groups: STAT_ROWS + 8 rows
        bn_finalize(p, p, STAT_ROWS + 8, eps=1e-3, momentum=0.1,
                    running_mean=torch.zeros(4, device=DEV),
                    running_var=torch.zeros(3, device=DEV))


@pytest.mark.parametrize("relu", [True, False])
def test_bn_relu_apply_into_slice(relu):
    torch.manual_seed(3)
    y = torch.randn(3, 37, 5, 7, device=DEV).to(memory_format=torch.channels_last)
    a, c = torch.randn(37, device=DEV), torch.randn(37, device=DEV)
    ref = y * a[:, None, None] + c[:, None, None]
    ref = F.relu(ref) if relu else ref
    assert rel_err(bn_relu_apply(y, a, c, relu=relu), ref) < 1e-6
    full = torch.zeros(3, 40, 5, 7, device=DEV)  # NCHW destination: strided stores
    bn_relu_apply(y, a, c, out=full[:, 2:39], relu=relu)
    assert rel_err(full[:, 2:39], ref) < 1e-6
    assert (full[:, :2] == 0).all() and (full[:, 39:] == 0).all()


@pytest.mark.parametrize("case", ["rank", "dtype", "channels", "too_small", "out_shape",
                                  "packed", "bias"])
def test_conv2d_fwd_errors(case):
    x = torch.randn(2, 4, 5, 5, device=DEV)
    wt = torch.randn(6, 4, 3, 3, device=DEV)
    exc, match, wrong = {  # each case's error and the wrong argument(s) that give it
        "rank": (ValueError, "4-D", dict(x=x[0])),
        "dtype": (TypeError, "dtype", dict(x=x.double(), weight=wt.double())),
        "channels": (ValueError, "channels", dict(weight=wt[:, :3])),
        "too_small": (ValueError, "smaller than the kernel", dict(x=x[:, :, :2])),
        "out_shape": (ValueError, "out has shape", dict(out=torch.empty(2, 6, 4, 3, device=DEV))),
        "packed": (ValueError, "packed weight", dict(packed=torch.empty(36, 5, device=DEV))),
        "bias": (ValueError, "bias", dict(bias=torch.zeros(5, device=DEV))),
    }[case]
    with pytest.raises(exc, match=match):
        conv2d_fwd(**(dict(x=x, weight=wt) | wrong))


@pytest.mark.skipif(DEV == "cuda", reason="the interpreter's limit; on a GPU bf16 runs")
def test_bf16_in_the_interpreter_is_refused_not_garbage():
    """The interpreter's tl.dot is wrong for bf16 (kernels/dtypes.py): the GEMM kernels say so;
    the pools (no tl.dot) still run bf16 and match torch."""
    from inception_fast.kernels.avg_pool3x3 import avg_pool3x3
    from inception_fast.kernels.conv2d_bwd import conv2d_dgrad

    x = torch.randn(2, 8, 5, 5).bfloat16()
    wt = torch.randn(4, 8, 3, 3).bfloat16()
    with pytest.raises(TypeError, match="bfloat16 on CPU"):
        conv2d_fwd(x, wt)
    with pytest.raises(TypeError, match="bfloat16 on CPU"):
        conv2d_dgrad(torch.randn(2, 4, 3, 3).bfloat16(), wt, (5, 5))
    want = F.avg_pool2d(x.float(), 3, 1, 1)
    assert rel_err(avg_pool3x3(x), want) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,ci,h,w,co,k,s,p", CONVS)
def test_conv_half_precision_vs_fp64(dtype, n, ci, h, w, co, k, s, p):
    """Inputs rounded to dtype, fp32 accumulation: error vs the fp64 conv of the same rounded
    inputs within 2x torch's own (cuDNN) error plus one output rounding."""
    torch.manual_seed(4)
    x = torch.randn(4 * n, ci, h, w, device=DEV).to(dtype).to(memory_format=torch.channels_last)
    wt = torch.randn(co, ci, *k, device=DEV).to(dtype)
    want = F.conv2d(x.double(), wt.double(), None, s, p)
    e_torch = rel_err(F.conv2d(x, wt, None, s, p), want)
    e_ours = rel_err(conv2d_fwd(x, wt, stride=s, padding=p), want)
    assert e_ours <= 2 * e_torch + torch.finfo(dtype).eps


def test_gpu_config_pruning_sees_keyword_arguments():
    """The GPU autotuner passes keyword launch arguments in kwargs, not named_args."""
    configs = gpu_configs(CONV_FWD)
    kept = prune_configs(configs, {}, C_out=32, C_in=3, M=50)
    assert kept and all(c.kwargs["BLOCK_N"] <= 32 and c.kwargs["BLOCK_K"] <= 32
                        and c.kwargs["BLOCK_M"] <= 64 for c in kept)
    big = prune_configs(configs, {"C_out": 768, "C_in": 2048, "M": 10 ** 6})
    assert 1 <= len(big) <= KEEP and all(c.kwargs["BLOCK_M"] >= 128 for c in big)
    assert all(c.kwargs["BLOCK_M"] % STAT_ROWS == 0 for c in configs)
