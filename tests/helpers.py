"""Helpers shared by the test modules (not a test module: pytest collects only test_*.py).
Fixtures live in tests/conftest.py; the whole-model fp64 check in tests/whole_model.py."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from inception_fast.nn import ConvBNReLU

CL = torch.channels_last
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(a, b):
    """max |a - b| relative to max |b| (elementwise relative error is meaningless near 0)."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def assert_rel_close(a, b, what, tol=1e-4):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def close(a, b, rtol=1e-4, atol=1e-5, what=""):
    """|a - b| <= atol + rtol * max|b| (scale-aware: gradients of deep blocks are large)."""
    err = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item()
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def assert_close_to_ref(out, ref, rel):
    """max |out - ref| <= rel * max |ref|, in float64 on the CPU (ref: the fp64 reference)."""
    out, ref = out.double().cpu(), ref.double().cpu()
    scale = ref.abs().max().item() or 1.0
    err = (out - ref).abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x max |ref| {scale:.3g}"


@contextlib.contextmanager
def no_tf32():
    """fp32 means fp32 on both sides: TF32 off for cuDNN's convolutions (through
    torch.backends.cudnn.flags, which the fused kernels' dot-precision rule follows too) and
    for CUDA matmuls (torch has no context manager for that flag: restored here)."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def make_pair(ci, co, k, s, p, dtype=torch.float32, seed=0):
    """A ConvBNReLU on backend torch (the reference) and an identical copy on backend triton,
    with non-trivial BN parameters and running stats."""
    torch.manual_seed(seed)
    ref = ConvBNReLU(ci, co, k, stride=s, padding=p, backend="torch")
    with torch.no_grad():
        ref.conv.weight.normal_(0, (ci * ref.conv.weight[0, 0].numel()) ** -0.5)
        ref.bn.weight.uniform_(0.5, 1.5)
        ref.bn.bias.uniform_(-0.5, 0.5)
        ref.bn.running_mean.uniform_(-0.3, 0.3)
        ref.bn.running_var.uniform_(0.5, 2.0)
    ref = ref.to(DEV, dtype)
    tri = copy.deepcopy(ref)
    tri.backend = "triton"
    return ref, tri


def random_in_layout(n, c, h, w, layout, device, wider=(9, 4)):
    """A random (n, c, h, w) tensor in the given memory layout: "nchw", "channels_last",
    "slice" (channels [start, start + c) of a channels_last tensor `extra` channels wider,
    wider = (extra, start): a slice of a concat buffer), "permuted" ((n, h, c, w) storage:
    neither NCHW nor NHWC)."""
    if layout == "nchw":
        return torch.randn(n, c, h, w, device=device)
    if layout == "channels_last":
        return torch.randn(n, c, h, w, device=device).to(memory_format=CL)
    if layout == "slice":
        extra, start = wider
        return torch.randn(n, c + extra, h, w, device=device).to(memory_format=CL)[
            :, start:start + c]
    if layout == "permuted":
        return torch.randn(n, h, c, w, device=device).permute(0, 2, 1, 3)
    raise AssertionError(layout)


def expect_errors(fn, cases):
    """Each (exception, message, args[, kwargs]) of `cases`: fn(*args, **kwargs) raises it."""
    for exc, match, args, *kwargs in cases:
        with pytest.raises(exc, match=match):
            fn(*args, **(kwargs[0] if kwargs else {}))


# ---- registered ops: opcheck inputs and torch.compile(fullgraph=True) against eager ------

def gen(seed):
    return torch.Generator().manual_seed(seed)


def in_layout(t, layout):
    return t.contiguous(memory_format=CL) if layout == "channels_last" else t.contiguous()


def _compiled(fn):
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def eager_and_compiled(fn, leaves, rest=(), grad=True):
    """[(outputs, grads of the leaves)] for fn eager and compiled, on fresh copies."""
    results = []
    for f in (fn, _compiled(fn)):
        ls = [t.detach().clone().requires_grad_(grad) for t in leaves]
        rs = [t.clone() if isinstance(t, torch.Tensor) else t for t in rest]
        outs = f(*ls, *rs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        grads = ()
        if grad:
            w = torch.randn(outs[0].shape, generator=gen(5)).to(outs[0].dtype)
            grads = torch.autograd.grad((outs[0].float() * w.float()).sum(), ls)
        results.append((tuple(o.detach() for o in outs) + tuple(rs), grads))
    return results


def assert_same(results, **tol):
    (oe, ge), (oc, gc) = results
    for a, b in zip(oe + ge, oc + gc):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(b, a, **tol)
