"""The two fused losses (ops/label_smoothing_ce.py, ops/joint_opt_loss.py) as registered torch
ops: torch.library.opcheck on each (schema, fake / meta implementation, and their registered
autograd), and torch.compile(fullgraph=True) of each loss against eager, values and gradients.
CPU: Triton through its interpreter (conftest.py).

The loss ops are functional (they mutate nothing) with registered autograd: requires_grad
logits, so opcheck's autograd checks (registration, aot_dispatch with backward) run."""
from __future__ import annotations

import pytest
import torch

from helpers import assert_same, eager_and_compiled, gen
from inception_fast.losses import joint_optimization_loss, label_smoothing_cross_entropy
from inception_fast.ops.joint_opt_loss import joint_opt_loss_triton
from inception_fast.ops.label_smoothing_ce import label_smoothing_ce_triton
from inception_fast.ops.library import registered_ops

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def test_ops_are_registered():
    assert {"inception_fast::label_smoothing_ce_triton",
            "inception_fast::joint_opt_loss_triton"} <= set(registered_ops())


@pytest.mark.parametrize("b,k", [(4, 10), (1, 1), (3, 37)])
def test_opcheck_label_smoothing_ce(b, k):
    g = gen(3)
    x = (3 * torch.randn(b, k, generator=g)).requires_grad_()
    t = torch.randint(0, k, (b,), generator=g)
    torch.library.opcheck(label_smoothing_ce_triton, (x, t, 0.1, True))
    torch.library.opcheck(label_smoothing_ce_triton, (x.detach(), t, 0.1, False))


@pytest.mark.parametrize("b,k", [(4, 10), (1, 1), (17, 7)])
def test_opcheck_joint_opt_loss(b, k):
    g = gen(4)
    x = (3 * torch.randn(b, k, generator=g)).requires_grad_()
    s = torch.softmax(torch.randn(b, k, generator=g), 1)
    prior = torch.softmax(torch.randn(k, generator=g), 0)
    torch.library.opcheck(joint_opt_loss_triton, (x, s, prior, 1.2, 0.8, True))
    torch.library.opcheck(joint_opt_loss_triton, (x.detach(), s, prior, 0.5, 2.0, False))


@pytest.mark.parametrize("grad", [True, False])
def test_compile_label_smoothing_ce(grad):
    g = gen(8)
    x = 3 * torch.randn(5, 13, generator=g)
    t = torch.randint(0, 13, (5,), generator=g)

    def fn(x, t):
        return label_smoothing_cross_entropy(x, t, 0.2, backend="triton")

    assert_same(eager_and_compiled(fn, [x], [t], grad=grad), rtol=0, atol=0)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("with_prior", [True, False])
def test_compile_joint_opt_loss(grad, with_prior):
    g = gen(9)
    x = 3 * torch.randn(6, 11, generator=g)
    s = torch.softmax(torch.randn(6, 11, generator=g), 1)
    prior = torch.softmax(torch.randn(11, generator=g), 0) if with_prior else None

    def fn(x, s):
        loss, terms = joint_optimization_loss(x, s, 0.5, 2.0, prior, backend="triton")
        return loss, terms["L_c"], terms["L_p"], terms["L_e"]

    assert_same(eager_and_compiled(fn, [x], [s], grad=grad), rtol=0, atol=0)
