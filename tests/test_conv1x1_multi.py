"""The horizontal 1x1 group (ops/conv1x1_multi.py: the 1x1 units reading one block input as
one GEMM, the pool unit's avg-pool after it) on backend "triton" against backend "torch":
outputs, the untouched channels of `out`, running statistics and gradients, per-unit
momenta, half precision, the eval fold cache and the argument checks. Its registered ops:
tests/test_conv1x1_multi_ops.py."""
from __future__ import annotations

import pytest
import torch

from helpers import close
from inception_fast.ops.conv1x1_multi import Unit1x1, conv1x1_multi

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _units(c_in, specs, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mods = []
    for c, off, pool in specs:
        conv = torch.nn.Conv2d(c_in, c, 1, bias=False)
        bn = torch.nn.BatchNorm2d(c, eps=1e-3)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
            bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(c, generator=g) - 0.5)
            bn.running_mean.copy_(torch.randn(c, generator=g))
            bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        mods.append((conv.to(DEV, dtype), bn.to(DEV), off, pool))
    return mods


def _as_units(mods, momentum=0.1):
    return [Unit1x1(c.weight, b.weight, b.bias, b.running_mean, b.running_var, b.eps, momentum,
                    off, pool) for c, b, off, pool in mods]


# Mixed_5b's layout, shrunk: final branch1x1 at 0, two intermediates, the pool unit last
# (odd widths, and the pool unit's slice not at the end of the output).
SPECS = [(8, 0, False), (5, None, False), (7, None, False), (3, 13, True)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_conv1x1_multi_matches_reference(training, grad):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 11, 5, 7, generator=g).to(DEV)
    gys = None
    res = {}
    for be in ("torch", "triton"):
        mods = _units(11, SPECS)
        xx = x.clone().requires_grad_(grad)
        out = torch.full((2, 18, 5, 7), 7.0, device=DEV)
        r = conv1x1_multi(xx, _as_units(mods), training=training, out=out.detach(), backend=be)
        if grad:
            if gys is None:
                gys = [torch.randn(t.shape, generator=g).to(DEV) for t in r]
            sum((t * gy).sum() for t, gy in zip(r, gys)).backward()
        res[be] = (r, out, mods, xx)
    (r1, o1, m1, x1), (r2, o2, m2, x2) = res["torch"], res["triton"]
    for a, b in zip(r2, r1):
        close(a, b, what="unit output")
    close(o2, o1, what="block output (untouched channels too)")
    assert o2[:, 8:13].eq(7.0).all()
    for (c1, b1, _, _), (c2, b2, _, _) in zip(m1, m2):
        close(b2.running_mean, b1.running_mean, what="running_mean")
        close(b2.running_var, b1.running_var, what="running_var")
        if grad:
            close(c2.weight.grad, c1.weight.grad, what="conv weight grad")
            close(b2.weight.grad, b1.weight.grad, what="bn weight grad")
            close(b2.bias.grad, b1.bias.grad, what="bn bias grad")
    if grad:
        close(x2.grad, x1.grad, what="input grad")


# Triton 3.8's interpreter gets bf16 tl.dot wrong on CPU (any GEMM kernel, A's conv included):
# the half-precision checks use fp16 there and bf16 on a GPU.
LOW = torch.bfloat16 if DEV == "cuda" else torch.float16


def test_conv1x1_multi_per_unit_momentum_and_half():
    """Units with different momenta take the per-unit finalize path; bf16/fp16 runs (loose)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 6, 4, 5, generator=g).to(DEV)
    outs = []
    for be in ("torch", "triton"):
        mods = _units(6, [(4, None, False), (3, 0, True)])
        units = _as_units(mods)
        units[1].momentum = 0.3
        out = torch.zeros(1, 3, 4, 5, device=DEV)
        r = conv1x1_multi(x, units, training=True, out=out, backend=be)
        outs.append((r, mods))
    close(outs[1][0][0], outs[0][0][0], what="output")
    for (_, b1, _, _), (_, b2, _, _) in zip(outs[0][1], outs[1][1]):
        close(b2.running_mean, b1.running_mean, what="running_mean")
    mods = _units(6, SPECS[:2], dtype=LOW)
    xb = x.to(LOW)
    out = torch.zeros(1, 8, 4, 5, device=DEV, dtype=LOW)
    r = conv1x1_multi(xb, _as_units(mods), training=False, out=out, backend="triton")
    ref = conv1x1_multi(xb, _as_units(mods), training=False,
                        out=torch.zeros_like(out), backend="torch")
    close(r[1], ref[1], rtol=3e-2, atol=3e-2, what="half precision")


def test_conv1x1_multi_eval_fold_cached_per_version():
    from inception_fast.ops.conv1x1_multi_triton import FOLD_CACHE

    x = torch.randn(1, 11, 4, 4).to(DEV)
    mods = _units(11, SPECS)
    out = torch.zeros(1, 18, 4, 4, device=DEV)
    with torch.no_grad():
        conv1x1_multi(x, _as_units(mods), training=False, out=out, backend="triton")
        first = FOLD_CACHE.peek(mods[0][0].weight)[0]
        conv1x1_multi(x, _as_units(mods), training=False, out=out, backend="triton")
        assert FOLD_CACHE.peek(mods[0][0].weight)[0] is first  # no refold
        mods[3][1].running_var.mul_(4.0)  # a new parameter version: refolded
        conv1x1_multi(x, _as_units(mods), training=False, out=out, backend="triton")
        assert FOLD_CACHE.peek(mods[0][0].weight)[0] is not first
        ref = torch.zeros_like(out)
        conv1x1_multi(x, _as_units(mods), training=False, out=ref, backend="torch")
    close(out, ref, what="after refold")


def test_conv1x1_multi_errors():
    x = torch.randn(1, 6, 4, 4).to(DEV)
    mods = _units(5, [(4, 0, False)])
    with pytest.raises(ValueError, match="weight must be"):
        conv1x1_multi(x, _as_units(mods), training=True, out=torch.zeros(1, 4, 4, 4),
                      backend="triton")
    mods = _units(6, [(4, 0, False)])
    with pytest.raises(ValueError, match="no out given"):
        conv1x1_multi(x, _as_units(mods), training=True, backend="triton")
    with pytest.raises(ValueError, match="does not fit"):
        conv1x1_multi(x, _as_units(mods), training=True, out=torch.zeros(1, 3, 4, 4),
                      backend="triton")
    mods = _units(6, [(2, None, False)] * 4)
    with pytest.raises(ValueError, match="at most 3 plain units"):
        conv1x1_multi(x, _as_units(mods), training=True, backend="triton")

