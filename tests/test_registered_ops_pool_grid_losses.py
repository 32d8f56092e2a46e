"""The registered ops (ops/library.py's pattern) of the max-pool slice, the grid reduction's
cuda path and the two fused losses: torch.library.opcheck on each (schema, fake / meta
implementation, aliasing, and for the functional loss ops their registered autograd), and
torch.compile(fullgraph=True) of each op family, whose outputs and gradients must match eager.

CPU only: Triton through its interpreter (conftest.py), the cuda path on the torch stand-in of
its kernels (ops/csrc_reference.py through conv_bn_relu_cuda.kernels_override)."""
from __future__ import annotations

import pytest
import torch

from inception_fast.losses import joint_optimization_loss, label_smoothing_cross_entropy
from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from inception_fast.ops import grid_reduction_cuda as grc
from inception_fast.ops.grid_reduction import (check_grid_reduction, grid_reduction,
                                               grid_reduction_cuda)
from inception_fast.ops.joint_opt_loss import joint_opt_loss_triton
from inception_fast.ops.label_smoothing_ce import label_smoothing_ce_triton
from inception_fast.ops.library import registered_ops
from inception_fast.ops.max_pool_slice import (max_pool3x3s2_into, max_pool3x3s2_triton_bwd,
                                               max_pool3x3s2_triton_fwd)

CL = torch.channels_last
OPS = ("max_pool3x3s2_triton_fwd", "max_pool3x3s2_triton_bwd", "grid_reduction_cuda_train_fwd",
       "grid_reduction_cuda_eval_fwd", "grid_reduction_cuda_bwd", "label_smoothing_ce_triton",
       "joint_opt_loss_triton")


@pytest.fixture
def ref_kernels(monkeypatch):
    monkeypatch.setattr(cbr_cuda, "kernels_override", R)
    return R


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _layout(t, layout):
    return t.contiguous(memory_format=CL) if layout == "channels_last" else t.contiguous()


def test_ops_are_registered():
    assert {f"inception_fast::{n}" for n in OPS} <= set(registered_ops())


# ---- opcheck ------------------------------------------------------------------------------
# The ops that write into `out` (and the running statistics) are differentiated through a
# torch.autograd.Function around them, not through registered autograd (which cannot express
# a mutated output), so opcheck gets inputs that do not require grad there: with requires_grad
# inputs its autograd-registration check would (rightly) report that the op has no autograd
# kernel of its own. Their gradients are checked by the torch.compile tests below and against
# the references in tests/test_cuda_ext.py, tests/test_blocks_fused.py.

@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("hw", [(9, 7), (3, 3)])
def test_opcheck_max_pool(layout, hw):
    g = _gen(0)
    x = _layout(torch.randn(2, 3, *hw, generator=g), layout)
    oh, ow = (hw[0] - 3) // 2 + 1, (hw[1] - 3) // 2 + 1
    out = _layout(torch.zeros(2, 7, oh, ow), layout)
    torch.library.opcheck(max_pool3x3s2_triton_fwd, (x, out, 2))
    idx = max_pool3x3s2_triton_fwd(x, out.clone(), 2)
    grad = _layout(torch.randn(2, 7, oh, ow, generator=g), layout)
    for need_x, need_out in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(max_pool3x3s2_triton_bwd,
                              (grad, idx, 2, list(hw), need_x, need_out))


def _grid_inputs(dtype, has_conv, layout, seed=1):
    g = _gen(seed)
    x = torch.randn(2, 6, 9, 11, generator=g).to(dtype).contiguous(memory_format=CL)
    w = (torch.randn(5, 6, 3, 3, generator=g) * 0.3).to(dtype) if has_conv else None
    gamma, beta = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g) * 0.2
    rm, rv = torch.randn(5, generator=g) * 0.1, torch.rand(5, generator=g) + 0.5
    out = _layout(torch.full((2, 15, 4, 5), 5.0, dtype=dtype), layout)
    return x, w, gamma, beta, rm, rv, out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: the fused route
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("save", [True, False])
def test_opcheck_grid_reduction_cuda(ref_kernels, dtype, has_conv, training, save):
    layout = "channels_last" if save else "contiguous"  # contiguous: through a temporary
    x, w, gamma, beta, rm, rv, out = _grid_inputs(dtype, has_conv, layout)
    op = grc.grid_reduction_cuda_train_fwd if training else grc.grid_reduction_cuda_eval_fwd
    args = (x, w, gamma, beta, rm, rv, out, 1, 8, 1e-3, 0.1, training, save)
    torch.library.opcheck(op, args)
    if not save:
        return
    saved = op(*args)
    grad = torch.randn(2, 15, 4, 5, generator=_gen(2)).to(dtype)
    for needs in ([True] * 5, [True, False, False, False, False],
                  [False, True, True, True, False], [False] * 4 + [True]):
        torch.library.opcheck(grc.grid_reduction_cuda_bwd,
                              (grad, x, w, *saved, 1, 8, training, needs))


# The loss ops are functional (they mutate nothing) with registered autograd: requires_grad
# logits, so opcheck's autograd checks (registration, aot_dispatch with backward) run.

@pytest.mark.parametrize("b,k", [(4, 10), (1, 1), (3, 37)])
def test_opcheck_label_smoothing_ce(b, k):
    g = _gen(3)
    x = (3 * torch.randn(b, k, generator=g)).requires_grad_()
    t = torch.randint(0, k, (b,), generator=g)
    torch.library.opcheck(label_smoothing_ce_triton, (x, t, 0.1, True))
    torch.library.opcheck(label_smoothing_ce_triton, (x.detach(), t, 0.1, False))


@pytest.mark.parametrize("b,k", [(4, 10), (1, 1), (17, 7)])
def test_opcheck_joint_opt_loss(b, k):
    g = _gen(4)
    x = (3 * torch.randn(b, k, generator=g)).requires_grad_()
    s = torch.softmax(torch.randn(b, k, generator=g), 1)
    prior = torch.softmax(torch.randn(k, generator=g), 0)
    torch.library.opcheck(joint_opt_loss_triton, (x, s, prior, 1.2, 0.8, True))
    torch.library.opcheck(joint_opt_loss_triton, (x.detach(), s, prior, 0.5, 2.0, False))


# ---- torch.compile(fullgraph=True) --------------------------------------------------------

def _compiled(fn):
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def _eager_and_compiled(fn, leaves, rest=(), grad=True):
    """[(outputs, grads of the leaves)] for fn eager and compiled, on fresh copies."""
    results = []
    for f in (fn, _compiled(fn)):
        ls = [t.detach().clone().requires_grad_(grad) for t in leaves]
        rs = [t.clone() if isinstance(t, torch.Tensor) else t for t in rest]
        outs = f(*ls, *rs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        grads = ()
        if grad:
            w = torch.randn(outs[0].shape, generator=_gen(5)).to(outs[0].dtype)
            grads = torch.autograd.grad((outs[0].float() * w.float()).sum(), ls)
        results.append((tuple(o.detach() for o in outs) + tuple(rs), grads))
    return results


def _assert_same(results, **tol):
    (oe, ge), (oc, gc) = results
    for a, b in zip(oe + ge, oc + gc):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(b, a, **tol)


@pytest.mark.parametrize("grad", [True, False])
def test_compile_max_pool_into_slice(grad):
    def fn(x):
        out = torch.zeros(2, 8, 4, 3).contiguous(memory_format=CL)
        view = max_pool3x3s2_into(x, out, 3, backend="triton")
        return out, view * 2

    x = torch.randn(2, 4, 9, 7, generator=_gen(6))
    results = _eager_and_compiled(fn, [x], grad=grad)
    _assert_same(results, rtol=0, atol=0)
    assert results[1][0][0][:, :3].abs().max() == 0  # the other slices untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_compile_grid_reduction_cuda(ref_kernels, dtype, has_conv, training, grad):
    """backend "cuda" on the csrc_reference kernels (its public dispatcher refuses CPU tensors:
    the checked entry's own checks, then the cuda path)."""
    x, w, gamma, beta, rm, rv, _ = _grid_inputs(dtype, has_conv, "channels_last")

    def fn(x, *rest):
        *params, rm, rv = rest
        w, gamma, beta = params if has_conv else (None, None, None)
        out = torch.full((2, 15, 4, 5), 5.0, dtype=x.dtype).contiguous(memory_format=CL)
        check_grid_reduction(x, w, out, 1, 8)
        grid_reduction_cuda(x, w, gamma, beta, rm, rv, out=out, conv_offset=1, pool_offset=8,
                            training=training)
        return out

    leaves = [x, w, gamma, beta] if has_conv else [x]
    results = _eager_and_compiled(fn, leaves, [rm, rv], grad=grad)
    _assert_same(results, rtol=1e-5, atol=1e-5)
    out = results[1][0][0]
    assert (out[:, 0] == 5).all() and (out[:, 6:8] == 5).all() and (out[:, 14] == 5).all()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("has_conv", [True, False])
def test_compile_grid_reduction_triton(training, has_conv):
    g = _gen(7)
    x = torch.randn(1, 4, 7, 7, generator=g).contiguous(memory_format=CL)
    w = torch.randn(5, 4, 3, 3, generator=g) * 0.3
    gamma, beta = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g) * 0.2
    rm, rv = torch.randn(5, generator=g) * 0.1, torch.rand(5, generator=g) + 0.5

    def fn(x, *rest):
        *params, rm, rv = rest
        w, gamma, beta = params if has_conv else (None, None, None)
        out = torch.zeros(1, 11, 3, 3).contiguous(memory_format=CL)
        grid_reduction(x, w, gamma, beta, rm, rv, out=out, conv_offset=0, pool_offset=7,
                       training=training, backend="triton")
        return out

    leaves = [x, w, gamma, beta] if has_conv else [x]
    _assert_same(_eager_and_compiled(fn, leaves, [rm, rv]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [True, False])
def test_compile_label_smoothing_ce(grad):
    g = _gen(8)
    x = 3 * torch.randn(5, 13, generator=g)
    t = torch.randint(0, 13, (5,), generator=g)

    def fn(x, t):
        return label_smoothing_cross_entropy(x, t, 0.2, backend="triton")

    _assert_same(_eager_and_compiled(fn, [x], [t], grad=grad), rtol=0, atol=0)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("with_prior", [True, False])
def test_compile_joint_opt_loss(grad, with_prior):
    g = _gen(9)
    x = 3 * torch.randn(6, 11, generator=g)
    s = torch.softmax(torch.randn(6, 11, generator=g), 1)
    prior = torch.softmax(torch.randn(11, generator=g), 0) if with_prior else None

    def fn(x, s):
        loss, terms = joint_optimization_loss(x, s, 0.5, 2.0, prior, backend="triton")
        return loss, terms["L_c"], terms["L_p"], terms["L_e"]

    _assert_same(_eager_and_compiled(fn, [x], [s], grad=grad), rtol=0, atol=0)


def test_max_pool_bwd_with_nothing_asked_returns_two_distinct_absents():
    """Two outputs of a registered op may not be one tensor (torch checks aliasing)."""
    x = torch.randn(1, 2, 5, 5).contiguous(memory_format=torch.channels_last)
    out = torch.zeros(1, 2, 2, 2).contiguous(memory_format=torch.channels_last)
    idx = torch.ops.inception_fast.max_pool3x3s2_triton_fwd(x, out, 0)
    gx, gout = torch.ops.inception_fast.max_pool3x3s2_triton_bwd(
        torch.ones_like(out), idx, 0, [5, 5], False, False)
    assert gx.numel() == 0 and gout.numel() == 0 and gx is not gout
