"""conv1x1_multi's registered ops (ops/conv1x1_multi_triton.py): torch.library.opcheck on
both, and torch.compile(fullgraph=True) of a call into an `out` buffer with its backward,
against eager."""
from __future__ import annotations

import pytest
import torch

from inception_fast.ops import conv1x1_multi_triton as T
from inception_fast.ops.conv1x1_multi import Unit1x1, _counts, conv1x1_multi, _triton_fwd

CL = torch.channels_last
DEV = "cuda" if torch.cuda.is_available() else "cpu"
N, C_IN, H, W = 2, 5, 5, 5
# (C_out, out_offset, pool): a final unit, an intermediate, the pool unit into its slice.
SPECS = [(3, 0, False), (4, None, False), (6, 3, True)]
C_OUT = 9


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = []
    for c, off, pool in SPECS:
        ps.append(dict(weight=torch.randn(c, C_IN, 1, 1, generator=g) * 0.4,
                       bn_weight=torch.rand(c, generator=g) + 0.5,
                       bn_bias=torch.rand(c, generator=g) - 0.5,
                       running_mean=torch.randn(c, generator=g) * 0.1,
                       running_var=torch.rand(c, generator=g) + 0.5, off=off, pool=pool))
    return [{k: v.to(DEV) if isinstance(v, torch.Tensor) else v for k, v in p.items()}
            for p in ps]


def _units(ps):
    return [Unit1x1(p["weight"], p["bn_weight"], p["bn_bias"], p["running_mean"],
                    p["running_var"], 1e-3, 0.1, p["off"], p["pool"]) for p in ps]


def _spec_and_lists(ps, training):
    """What conv1x1_multi_triton passes to the ops (plan order: plain units, then the pool)."""
    ordered = [p for p in ps if not p["pool"]] + [p for p in ps if p["pool"]]
    spec = (tuple(-1 if p["off"] is None else p["off"] for p in ordered),
            (T.HAS_GAMMA | T.HAS_BETA | T.HAS_RUNNING,) * len(ordered), (1e-3,) * len(ordered),
            (0.1,) * len(ordered), True, training)
    lists = [[p[k] for p in ordered] for k in ("weight", "bn_weight", "bn_bias",
                                              "running_mean", "running_var")]
    return spec, lists


@pytest.mark.parametrize("training", [True, False])
def test_opcheck_fwd_and_bwd(training):
    # opcheck is given inputs that do not require grad: the registered ops have no autograd
    # kernel of their own (their gradients come from _Conv1x1MultiFn), which opcheck's
    # autograd-registration test would report for inputs requiring grad.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, C_IN, H, W, generator=g).to(DEV).contiguous(memory_format=CL)
    ps = _params()
    spec, (weights, gammas, betas, means, vars_) = _spec_and_lists(ps, training)
    out = torch.zeros(N, C_OUT, H, W, device=DEV).contiguous(memory_format=CL)
    offsets, flags, eps, momentum, has_pool, _ = spec
    run, stats = ((means, vars_), ([], [])) if training else (([], []), (means, vars_))
    for save in (True, False):
        args = (x, out, weights, gammas, betas, *run, *stats, list(offsets), list(flags),
                list(eps), list(momentum), has_pool, training, save)
        torch.library.opcheck(T.conv1x1_multi_triton_fwd, args)
    res = _triton_fwd(x, out, spec, weights, gammas, betas, means, vars_, True)
    grad_out = torch.randn(out.shape, generator=g).to(DEV)
    grad_inter = torch.randn(res[1].shape, generator=g).to(DEV)  # the intermediate (slot 1)
    for needs in ([1, 1], [0, 1], [1, 0], [0, 0]):
        args = (grad_out, [grad_inter], x, weights, gammas, *res[3:], list(offsets),
                list(flags), has_pool, training, needs)
        torch.library.opcheck(T.conv1x1_multi_triton_bwd, args)


def test_fwd_returns_fresh_tensors_and_bumps_mutated():
    x = torch.randn(N, C_IN, H, W, device=DEV)
    ps = _params()
    spec, (weights, gammas, betas, means, vars_) = _spec_and_lists(ps, True)
    out = torch.zeros(N, C_OUT, H, W, device=DEV)
    versions = [t._version for t in (out, *means)]
    res = _triton_fwd(x, out, spec, weights, gammas, betas, means, vars_, True)
    inputs = {t.untyped_storage().data_ptr() for t in (x, out, *weights, *gammas, *betas,
                                                       *means, *vars_)}
    assert all(r.numel() == 0 or r.untyped_storage().data_ptr() not in inputs for r in res)
    assert all(t._version > v for t, v in zip((out, *means), versions))
    assert _counts(spec) == (3, 3, 3, 3)


def _step(x, ps, out, training, w_out):
    r = conv1x1_multi(x, _units(ps), training=training, out=out, backend="triton")
    # Fresh tensors out of the compiled region: under AOTAutograd a graph output that aliases a
    # graph input (`out`, or its slices r[0], r[2]) is regenerated from that input after the
    # graph and carries no grad_fn (backend="eager" keeps it); inside the graph the gradient
    # through `out` is exact, which is what this test checks.
    return out * w_out, r[1] * r[1]


@pytest.mark.parametrize("training", [True, False])
def test_compile_fullgraph_matches_eager(training):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(N, C_IN, H, W, generator=g).to(DEV).contiguous(memory_format=CL)
    w_out = torch.randn(N, C_OUT, H, W, generator=g).to(DEV)
    runs = []
    for compiled in (False, True):
        torch._dynamo.reset()
        ps = _params()
        for p in ps:
            for k in ("weight", "bn_weight", "bn_bias"):
                p[k].requires_grad_()
        x = x0.clone().requires_grad_()
        out = torch.zeros(N, C_OUT, H, W, device=DEV).contiguous(memory_format=CL)
        fn = torch.compile(_step, fullgraph=True, backend="aot_eager") if compiled else _step
        a, b = fn(x, ps, out, training, w_out)
        (a.sum() + b.sum()).backward()
        runs.append((out.detach().clone(), a.detach(), b.detach(), x.grad, ps))
    (o1, a1, b1, gx1, p1), (o2, a2, b2, gx2, p2) = runs
    torch.testing.assert_close(o2, o1, msg="out")
    torch.testing.assert_close(a2, a1)
    torch.testing.assert_close(b2, b1)
    torch.testing.assert_close(gx2, gx1, msg="grad x")
    for a, b in zip(p2, p1):
        for k in ("weight", "bn_weight", "bn_bias"):
            assert a[k].grad is not None and a[k].grad.abs().sum() > 0, k
            torch.testing.assert_close(a[k].grad, b[k].grad, msg=k)
        for k in ("running_mean", "running_var"):
            torch.testing.assert_close(a[k], b[k], msg=k)
    moved = not torch.equal(p2[0]["running_mean"], _params()[0]["running_mean"])
    assert moved == training  # updated in training only


def test_compile_fullgraph_eval_no_grad_folded():
    """Eval without grad (the folded path, its cache inside the registered op) compiled."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, C_IN, H, W, generator=g).to(DEV)
    ps = _params()

    def fn(x, out):
        conv1x1_multi(x, _units(ps), training=False, out=out, backend="triton")
        return out * 1

    want = torch.zeros(N, C_OUT, H, W, device=DEV)
    with torch.no_grad():
        fn(x, want)
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        T.FOLD_CACHE.clear()
        for _ in range(2):
            out = torch.zeros(N, C_OUT, H, W, device=DEV)
            torch.testing.assert_close(compiled(x, out), want)
            torch.testing.assert_close(out, want)
    assert T.FOLD_CACHE.info()["hits"] >= 1  # folded once, reused
