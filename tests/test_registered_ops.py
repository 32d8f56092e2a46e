"""conv_bn_relu as registered torch ops (inception_fast::conv_bn_relu_{triton,cuda}_*):
torch.library.opcheck on each (schema, declared mutations, fake implementation against the
real one, Dynamo / AOT dispatch), and torch.compile(fullgraph=True) of ConvBNReLU stacks
against eager, training (outputs, every gradient, running statistics) and eval.

opcheck's inputs do not require grad: the registered ops carry no autograd kernel of their
own, the op's torch.autograd.Function (which Dynamo traces) supplies the gradients, and the
compile tests below check those."""
from __future__ import annotations

import copy

import pytest
import torch

from inception_fast.nn import ConvBNReLU
from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import conv_bn_relu_triton as cbr_triton
from inception_fast.ops.library import registered_ops

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU cases (GPU: gpu tests)")
CL = torch.channels_last
# opcheck's utilities without test_autograd_registration (see the module doc).
CHECKS = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


def _bn(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.2,
            torch.randn(c, generator=g) * 0.1, torch.rand(c, generator=g) + 0.5)


# (x shape, weight shape, stride, padding, out channels total, out offset, pool offset,
#  pool after)
CASES = {
    "3x3s2-pool": ((2, 5, 9, 9), (6, 5, 3, 3), [2, 2], [0, 0], 16, 2, 9, False),
    "1x3-slice": ((1, 8, 5, 7), (4, 8, 1, 3), [1, 1], [0, 1], 9, 5, -1, False),
    "1x1-new": ((3, 7, 4, 5), (3, 7, 1, 1), [1, 1], [0, 0], 0, 0, -1, False),
    "3x3-pool-after": ((2, 3, 9, 8), (5, 3, 3, 3), [1, 1], [1, 1], 0, 0, -1, True),
}
# The Triton op also takes the image as its kernels do: 3 channels padded to 8
# (ops/aligned_input.py), the weight's 3.
TRITON_ONLY = {"3x3-padded-rgb": ((2, 8, 9, 8), (5, 3, 3, 3), [2, 2], [0, 0], 0, 0, -1, False)}


def _fwd_args(case, training, save):
    xs, ws, stride, padding, total, off, pool, after = {**CASES, **TRITON_ONLY}[case]
    x = torch.randn(xs).contiguous(memory_format=CL)
    w = torch.randn(ws) * 0.3
    gamma, beta, rm, rv = _bn(ws[0])
    out = None
    if total:
        oh = (xs[2] + 2 * padding[0] - ws[2]) // stride[0] + 1
        ow = (xs[3] + 2 * padding[1] - ws[3]) // stride[1] + 1
        out = torch.zeros(xs[0], total, oh, ow).contiguous(memory_format=CL)
    return (x, w, gamma, beta, rm, rv, out, stride, padding, 1e-3, 0.1, training, off, pool,
            after, save)


def _triton_fwd_args(case, training, save, in_bn=False, defer=False):
    """The Triton forward op's arguments: _fwd_args with in_a / in_c after `out` (in_bn: x is
    a deferred y with BN + ReLU coefficients) and `defer` last."""
    x, w, gamma, beta, rm, rv, out, *rest = _fwd_args(case, training, save)
    g = torch.Generator().manual_seed(1)
    vec = lambda: torch.randn(x.shape[1], generator=g) if in_bn else None  # noqa: E731
    return (x, w, gamma, beta, rm, rv, out, vec(), vec(), *rest, defer)


# (case, in_bn, defer): the deferred-BN chain links (ops/conv_bn_relu_triton.py, in_bn / defer)
# on the cases that take them.
TRITON_CASES = [(c, False, False) for c in (*CASES, *TRITON_ONLY)] + [
    ("1x1-new", True, False), ("1x1-new", False, True), ("3x3-pool-after", True, False)]


@pytest.mark.parametrize("case,in_bn,defer", TRITON_CASES)
@pytest.mark.parametrize("training,save", [(True, True), (False, True), (False, False)])
def test_opcheck_triton_fwd(case, in_bn, defer, training, save):
    op = (torch.ops.inception_fast.conv_bn_relu_triton_train_fwd if training
          else torch.ops.inception_fast.conv_bn_relu_triton_eval_fwd)
    torch.library.opcheck(op, _triton_fwd_args(case, training, save, in_bn, defer),
                          test_utils=CHECKS)


@pytest.mark.parametrize("case,in_bn,defer", TRITON_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_opcheck_triton_bwd(case, in_bn, defer, training):
    fwd_args = _triton_fwd_args(case, training, True, in_bn, defer)
    x, w, gamma, beta, rm, rv, out, in_a, in_c, stride, padding, *_, off, pool, after, _s, _d \
        = fwd_args
    res, y, mean, invstd, a, c, idx = cbr_triton.conv_bn_relu_triton_fwd(*fwd_args)
    grad = torch.randn_like(out if out is not None else y if defer else res)
    args = (grad, x, w, y, mean, invstd, a, c, gamma, idx, in_a, in_c, stride, padding, training,
            off if out is not None else -1, pool, after,
            [True, True, True, True, out is not None])
    torch.library.opcheck(torch.ops.inception_fast.conv_bn_relu_triton_bwd.default, args,
                          test_utils=CHECKS)


@pytest.mark.parametrize("case", ["1x3-slice", "1x1-new"])
@pytest.mark.parametrize("training,save", [(True, True), (False, True), (False, False)])
def test_opcheck_cuda_fwd_and_bwd(ref_kernels, case, training, save):
    x, w, gamma, beta, rm, rv, out, stride, padding, eps, mom, _t, off, _p, _a, _s = _fwd_args(
        case, training, save)
    fwd = (torch.ops.inception_fast.conv_bn_relu_cuda_train_fwd if training
           else torch.ops.inception_fast.conv_bn_relu_cuda_eval_fwd)
    args = (x, w, gamma, beta, rm, rv, out, stride, padding, eps, mom, training, off, save)
    torch.library.opcheck(fwd, args, test_utils=CHECKS)
    if not save:
        return
    res, y, bn = fwd(*args)
    grad = torch.randn_like(out if out is not None else res)
    bwd_args = (grad, x, w, y, bn, stride, padding, training, off if out is not None else -1,
                [True, True, True, True, out is not None])
    torch.library.opcheck(torch.ops.inception_fast.conv_bn_relu_cuda_bwd.default, bwd_args,
                          test_utils=CHECKS)


def test_ops_are_registered():
    ops = registered_ops()
    for name in ("conv_bn_relu_triton_train_fwd", "conv_bn_relu_triton_eval_fwd",
                 "conv_bn_relu_triton_bwd", "conv_bn_relu_cuda_train_fwd",
                 "conv_bn_relu_cuda_eval_fwd", "conv_bn_relu_cuda_bwd"):
        assert f"inception_fast::{name}" in ops


def _stack(backend):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        ConvBNReLU(3, 8, 3, stride=2, backend=backend),
        ConvBNReLU(8, 6, (1, 3), padding=(0, 1), backend=backend),
        ConvBNReLU(6, 5, 1, backend=backend))


def test_fullgraph_compile_matches_eager():
    eager = _stack("triton")
    compiled_mod = copy.deepcopy(eager)
    compiled = torch.compile(compiled_mod, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 11, 9).contiguous(memory_format=CL)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for mod, xi in ((eager, xs[0]), (compiled, xs[1])):
        mod.train()
        mod(xi).square().sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-4, atol=1e-5)
    for (n, p), q in zip(eager.named_parameters(), compiled_mod.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=n)
    for (n, b), c in zip(eager.named_buffers(), compiled_mod.buffers()):
        torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-6, msg=n)
    eager.eval(), compiled_mod.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_fullgraph_compile_cuda_backend_into_slices(ref_kernels, training):
    """Two convs writing channel slices of one output (the cuda backend, reference kernels)."""
    x0 = torch.randn(2, 6, 7, 7).contiguous(memory_format=CL)
    ws = [torch.randn(4, 6, 1, 3) * 0.3, torch.randn(3, 6, 3, 1) * 0.3]
    pads = [(0, 1), (1, 0)]

    def f(x, w0, w1, bn):
        out = torch.empty(2, 7, 7, 7).contiguous(memory_format=CL)
        res = []
        for k, (w, pad) in enumerate(zip((w0, w1), pads)):
            g, b, rm, rv = bn[k]
            res.append(cbr_cuda.conv_bn_relu_cuda(x, w, g, b, rm, rv, padding=pad,
                                                  training=training, out=out.detach(),
                                                  out_offset=4 * k))
        return torch.cat([r.flatten() for r in res]).square().sum()

    runs = []
    for fn in (f, torch.compile(f, fullgraph=True, backend="aot_eager")):
        x = x0.clone().requires_grad_()
        w = [t.clone().requires_grad_() for t in ws]
        bn = [[t.requires_grad_() if i < 2 else t for i, t in enumerate(_bn(c, seed))]
              for seed, c in enumerate((4, 3))]
        fn(x, *w, bn).backward()
        runs.append([x.grad, *(t.grad for t in w), bn[0][0].grad, bn[1][1].grad,
                     bn[0][2], bn[1][3]])
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
