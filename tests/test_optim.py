"""RMSpropTF against a hand-computed step, the LR schedule, and the EMA."""
import math

import pytest
import torch

from inception_fast.train.ema import build_ema
from inception_fast.train.optim import RMSpropTF, build_optimizer, param_groups
from inception_fast.train.schedule import StaircaseDecay, build_scheduler, scaled_lr


def _hand_rmsprop_tf(p, grads, lr, decay=0.9, mom=0.9, eps=1.0, wd=0.0):
    """TensorFlow's RMSProp in plain python floats (ms starts at 1, eps inside the root)."""
    ms, buf = 1.0, 0.0
    for g in grads:
        g = g + wd * p
        ms = decay * ms + (1 - decay) * g * g
        buf = mom * buf + lr * g / math.sqrt(ms + eps)
        p = p - buf
    return p


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_rmsprop_tf_matches_hand_computed_steps(wd):
    p0 = [1.0, -2.0, 0.25]
    grads = [[0.5, -3.0, 0.0], [-0.2, 1.5, 4.0], [0.1, 0.1, -1.0]]
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF([p], lr=0.1, weight_decay=wd)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    want = [_hand_rmsprop_tf(p0[i], [g[i] for g in grads], 0.1, wd=wd) for i in range(3)]
    torch.testing.assert_close(p.detach(), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    # One step by hand: ms = 0.9 + 0.1 * 0.25, p = 1 - 0.1 * 0.5 / sqrt(ms + 1).
    assert _hand_rmsprop_tf(1.0, [0.5], 0.1) == pytest.approx(1 - 0.05 / math.sqrt(1.925))


def test_rmsprop_tf_differs_from_torch_rmsprop():
    """torch's RMSprop (eps outside the root, zero accumulator) is a different optimizer."""
    a = torch.tensor([1.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    oa = RMSpropTF([a], lr=0.1)
    ob = torch.optim.RMSprop([b], lr=0.1, alpha=0.9, eps=1.0, momentum=0.9)
    for o, t in ((oa, a), (ob, b)):
        t.grad = torch.tensor([0.5])
        o.step()
    assert abs(float(a.detach()) - float(b.detach())) > 1e-3


def test_rmsprop_tf_rejects_bad_settings_and_groups_decay():
    with pytest.raises(ValueError, match="invalid RMSpropTF"):
        RMSpropTF([torch.zeros(1, requires_grad=True)], eps=0.0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    g = param_groups(m, 4e-5)
    assert [len(x["params"]) for x in g] == [1, 3] and g[1]["weight_decay"] == 0
    assert isinstance(build_optimizer("sgd", m, 0.1), torch.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("adam", m, 0.1)


def test_lr_schedule_staircase_and_warmup():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=scaled_lr(0.045, 64, 32))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.09)
    sched = build_scheduler(opt, steps_per_epoch=10, decay=0.94, decay_epochs=2,
                            warmup_epochs=0.5)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step, lr in enumerate(lrs):
        want = 0.09 * 0.94 ** ((step // 10) // 2) * (min(1.0, (step + 1) / 5))
        assert lr == pytest.approx(want, rel=1e-12), step
    assert StaircaseDecay(10)(39) == pytest.approx(0.94) and StaircaseDecay(10)(40) == 0.94 ** 2
    assert scaled_lr(0.045, 64, 0) == 0.045


def test_ema_tracks_tf_formula_including_buffers():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = build_ema(m, decay=0.9)
    ref = {k: v.clone().double() for k, v in m.state_dict().items()}
    for n in range(5):
        m.train()
        m(torch.randn(4, 3))  # updates BN buffers
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(m)
        d = min(0.9, (1 + n) / (10 + n)) if n > 0 else 0.0  # first update copies
        for k, v in m.state_dict().items():
            if v.is_floating_point():
                ref[k] = d * ref[k] + (1 - d) * v.double()
            else:
                ref[k] = v.clone()
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v.double(), ref[k].double(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="EMA decay"):
        build_ema(m, decay=1.0)
