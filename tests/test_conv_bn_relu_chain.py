"""Chains of conv units with deferred BN + ReLU (inception_fast/nn/chain.py; ops/conv_bn_relu.py
in_bn / defer; kernels/conv_common.bn_relu_operand): on Triton, a unit hands the next its pre-BN
output and BN coefficients, and the next conv applies them to its operand tiles in forward and
in wgrad. Checked against the same units on the torch backend (the pure-torch reference), fp32
on CPU through the interpreter: outputs, every gradient (input, conv weights, BN weights and
biases) and the running statistics, in training, eval with grad and eval without; on the stem's
shapes (shrunk) and on odd ones; that the activations between linked units are never applied
as a pass of their own (stem chains and the fused blocks' branch chains, nn/blocks.py); and the
errors for a deferred input on a backend that cannot take it."""
import copy

import pytest
import torch

from inception_fast.backends import why_unavailable
from inception_fast.nn import ConvBNReLU
from inception_fast.nn.chain import conv_chain
from inception_fast.nn.pool import MaxPool3x3s2
from inception_fast import nn as ifnn
from inception_fast.ops import conv_bn_relu
from inception_fast.ops import conv_bn_relu_triton as cbr_triton
from inception_fast.ops.deferred import DeferredActivation

pytestmark = pytest.mark.skipif(why_unavailable("triton") is not None,
                                reason=f"triton unavailable: {why_unavailable('triton')}")
CL = torch.channels_last

# name: (input (N, C, H, W), [(C_out, kernel, stride, padding)] per unit, max-pool after the last)
CHAINS = {
    # Conv2d_1a (stride 2) -> 2a -> 2b -> maxpool1 at 299, shrunk to 31x31 and 8/8/16 channels
    "stem-1a-2a-2b-pool": ((2, 3, 31, 31), [(8, 3, 2, 0), (8, 3, 1, 0), (16, 3, 1, 1)], True),
    # Conv2d_3b (1x1) -> 4a -> maxpool2 with the model's channels (4a's wgrad reads its 80
    # deferred channels as the dot's A operand: kernels/conv2d_bwd.py, X_IS_A)
    "stem-3b-4a-pool": ((2, 64, 13, 13), [(80, 1, 1, 0), (192, 3, 1, 0)], True),
    # the paper model's 3b -> 4a -> 4b (no pool), channels not a multiple of 8, odd H / W
    "odd-3-units": ((3, 5, 11, 9), [(13, 3, 1, 0), (7, 1, 1, 0), (9, 3, 2, 1)], False),
    # batch 1, a 1xn unit and a padded nx1 unit after a deferred one
    "batch1-asym": ((1, 6, 9, 10), [(12, (1, 3), 1, (0, 1)), (10, (3, 1), 1, (1, 0))], False),
}


def _units(spec, c_in, backend):
    units = []
    for c_out, k, s, p in spec:
        units.append(ConvBNReLU(c_in, c_out, k, stride=s, padding=p, backend=backend))
        c_in = c_out
    torch.manual_seed(0)
    for u in units:  # BN parameters away from 1 / 0, so that a wrong a or c shows
        with torch.no_grad():
            u.bn.weight.uniform_(0.5, 1.5)
            u.bn.bias.uniform_(-0.3, 0.3)
            u.bn.running_mean.uniform_(-0.2, 0.2)
            u.bn.running_var.uniform_(0.5, 1.5)
    return units


def _run(units, pool, x):
    return conv_chain(x, *units, pool=MaxPool3x3s2(units[0].backend) if pool else None)


def _pair(name):
    xs, spec, pool = CHAINS[name]
    ref = _units(spec, xs[1], "torch")
    fused = copy.deepcopy(ref)
    for u in fused:
        u.backend = "triton"
    return xs, ref, fused, pool


def _input(xs, layout):
    torch.manual_seed(1)
    if layout == "noncontig":  # a channel slice of a wider NHWC tensor
        x = torch.randn(xs[0], xs[1] + 3, *xs[2:]).contiguous(memory_format=CL)[:, 1:1 + xs[1]]
    else:
        x = torch.randn(xs)
        x = x.contiguous(memory_format=CL) if layout == "cl" else x
    return x


def _grads(units, x):
    out = [x.grad]
    for u in units:
        out += [u.conv.weight.grad, u.bn.weight.grad, u.bn.bias.grad]
    return out


@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize("layout", ["cl", "nchw", "noncontig"])
def test_chain_training_matches_torch(name, layout):
    xs, ref, fused, pool = _pair(name)
    x = _input(xs, layout)
    xr, xf = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    yr, yf = _run(ref, pool, xr), _run(fused, pool, xf)
    torch.testing.assert_close(yf, yr, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g)
    for i, (a, b) in enumerate(zip(_grads(fused, xf), _grads(ref, xr))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"grad {i}: {m}")
    for uf, ur in zip(fused, ref):
        torch.testing.assert_close(uf.bn.running_mean, ur.bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(uf.bn.running_var, ur.bn.running_var, rtol=1e-5, atol=1e-6)
        assert int(uf.bn.num_batches_tracked) == int(ur.bn.num_batches_tracked) == 1


@pytest.mark.parametrize("name", ["stem-1a-2a-2b-pool", "odd-3-units"])
@pytest.mark.parametrize("grad", [True, False])
def test_chain_eval_matches_torch(name, grad):
    xs, ref, fused, pool = _pair(name)
    for u in ref + fused:
        u.eval()
    x = _input(xs, "cl")
    xr, xf = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):  # without grad: BN folded into the convs, no deferral
        yr, yf = _run(ref, pool, xr), _run(fused, pool, xf)
    torch.testing.assert_close(yf, yr, rtol=1e-4, atol=1e-4)
    if grad:
        g = torch.randn_like(yr)
        yr.backward(g)
        yf.backward(g)
        for a, b in zip(_grads(fused, xf), _grads(ref, xr)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_chain_training_without_grad_matches_torch():
    xs, ref, fused, pool = _pair("stem-3b-4a-pool")
    x = _input(xs, "cl")
    with torch.no_grad():
        torch.testing.assert_close(_run(fused, pool, x), _run(ref, pool, x), rtol=1e-4,
                                   atol=1e-4)
    for uf, ur in zip(fused, ref):
        torch.testing.assert_close(uf.bn.running_var, ur.bn.running_var, rtol=1e-5, atol=1e-6)


def _applies(monkeypatch):
    """Counts the BN-apply passes of the Triton units (kernels/bn_train.bn_relu_apply)."""
    calls = []
    real = cbr_triton.bn_relu_apply

    def counted(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)
    monkeypatch.setattr(cbr_triton, "bn_relu_apply", counted)
    return calls


def test_linked_units_apply_no_bn_pass_and_hooks_unlink(monkeypatch):
    """Three linked units: only the last applies its BN + ReLU as a pass of its own. A hook
    on the middle unit (a forward hook wants its output, a backward hook its gradients)
    unlinks it on both sides, and the gradients stay right."""
    xs, ref, fused, _ = _pair("odd-3-units")
    calls = _applies(monkeypatch)
    x = _input(xs, "cl").requires_grad_()
    _run(fused, False, x).sum().backward()
    assert len(calls) == 1
    seen = []
    fused[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    calls.clear()
    y = _run(fused, False, x)
    assert len(calls) == 3 and seen == [calls[1]] and y.shape == calls[2]
    fused2 = copy.deepcopy(ref)
    for u in fused2:
        u.backend = "triton"
    fused2[1].register_full_backward_hook(lambda m, gi, go: None)
    calls.clear()
    xf, xr = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    g = torch.randn(y.shape)
    _run(fused2, False, xf).backward(g)
    _run(copy.deepcopy(ref), False, xr).backward(g)
    assert len(calls) == 3
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-4, atol=1e-4)


def _unit(seed=0, c_in=4, c_out=6, backend="triton"):
    torch.manual_seed(seed)
    u = ConvBNReLU(c_in, c_out, 3, padding=1, backend=backend)
    with torch.no_grad():
        u.bn.weight.uniform_(0.5, 1.5)
        u.bn.bias.uniform_(-0.3, 0.3)
    return u


def test_a_deferred_activation_used_anywhere_is_the_activation():
    """defer=True gives a DeferredActivation, not a tensor; used as the input of a unit on
    another backend, or materialized and used by anything, its value and every gradient are
    those of the plain unit's output."""
    x = torch.randn(2, 4, 7, 6).contiguous(memory_format=CL)
    plain, fused = _unit(), _unit()
    d = fused(x.requires_grad_(), defer=True)
    assert isinstance(d, DeferredActivation)
    ref = plain(x)
    torch.testing.assert_close(d.materialize(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    (d.materialize() * g).sum().backward()
    got = [t.grad.clone() for t in (x, fused.conv.weight, fused.bn.weight, fused.bn.bias)]
    x.grad = None
    (ref * g).sum().backward()
    want = [x.grad, plain.conv.weight.grad, plain.bn.weight.grad, plain.bn.bias.grad]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # a torch-backend consumer of a deferred activation materializes it
    nxt_t, nxt_f = _unit(1, 6, 5, "torch"), _unit(1, 6, 5, "torch")
    torch.testing.assert_close(nxt_f(fused(x, defer=True)), nxt_t(plain(x)), rtol=1e-4,
                               atol=1e-4)


def test_defer_errors_and_bad_vectors():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(3, 4, 1, 1)
    with pytest.raises(ValueError, match="defer"):
        conv_bn_relu(x, w, None, None, None, None, training=True, defer=True,
                     out=torch.empty(1, 3, 5, 5), backend="torch")
    with pytest.raises(ValueError, match="in_bn must be two contiguous float32"):
        cbr_triton.conv_bn_relu_triton(x, w, None, None, None, None, training=True,
                                       in_bn=(torch.ones(3), torch.ones(4)))
    with pytest.raises(ValueError, match="in_bn must be two contiguous float32"):
        cbr_triton.conv_bn_relu_triton(x, w, None, None, None, None, training=True,
                                       in_bn=(torch.ones(8)[::2], torch.ones(4)))
    # a weight whose channels differ from the input's (not the image's alignment padding)
    for bad in (torch.randn(3, 5, 1, 1), torch.randn(3, 12, 1, 1)):
        with pytest.raises(ValueError, match="channels"):
            cbr_triton.conv_bn_relu_triton(torch.randn(1, 3, 5, 5), bad, None, None, None, None,
                                           training=True)


def test_materialize_is_the_activation_with_a_pass_through_gradient():
    torch.manual_seed(0)
    y = torch.randn(2, 4, 3, 3, requires_grad=True)
    a, c = torch.randn(4), torch.randn(4)
    z = DeferredActivation(y, a, c).materialize()
    torch.testing.assert_close(z, torch.relu(y * a.view(1, -1, 1, 1) + c.view(1, -1, 1, 1)))
    g = torch.randn_like(z)
    z.backward(g)
    # the producer takes the activation's gradient (ops/deferred.py): passed through as is
    torch.testing.assert_close(y.grad, g)


# block -> (class, kwargs, C_in, deferred links, units pinned to torch)
BLOCK_CHAINS = {
    "A": (ifnn.InceptionA, dict(in_channels=8, pool_features=4), 8, 1, ()),
    "B": (ifnn.InceptionB, dict(in_channels=8), 8, 2, ()),
    "C": (ifnn.InceptionC, dict(in_channels=12, channels_7x7=8), 12, 4, ()),
    "D": (ifnn.InceptionD, dict(in_channels=8), 8, 2, ()),
    "E": (ifnn.InceptionE, dict(in_channels=8), 8, 1, ()),
    # one of 3x3dbl_2's two readers off Triton: that link is not deferred
    "E-one-reader-on-torch": (ifnn.InceptionE, dict(in_channels=8), 8, 0, ("branch3x3dbl_3b",)),
}


@pytest.mark.parametrize("block", list(BLOCK_CHAINS))
def test_block_branch_chains_defer_and_match_torch(block, monkeypatch):
    """Inside the fused blocks (nn/blocks.py _chain / _link), every branch link between Triton
    units is deferred (A's and B's 3x3dbl, C's 7x7 and 7x7dbl, D's 7x7x3, E's 3x3dbl_2 read by
    two units): the deferred run applies `links` fewer BN passes than with linking off, and its
    output and every gradient equal the torch block's."""
    cls, kw, c_in, links, pinned = BLOCK_CHAINS[block]
    torch.manual_seed(0)
    ref = cls(**kw, backend="torch")
    fused = copy.deepcopy(ref)
    for name, m in fused.named_modules():
        if isinstance(m, ConvBNReLU):
            m.backend = "torch" if name in pinned else "triton"
    torch.manual_seed(1)
    x = torch.randn(2, c_in, 7, 7).contiguous(memory_format=CL)
    calls = _applies(monkeypatch)
    with torch.no_grad():  # no backward, nothing deferred: every unit applies its BN
        fused(x)
    plain = len(calls)
    calls.clear()
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fused(xf)
    assert plain - len(calls) == links, (plain, len(calls))
    torch.testing.assert_close(yf, yr, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-4, atol=1e-4)
    for (n, p), q in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4, msg=n)
