"""RMSpropTF against a hand-computed step, the LR schedule, and the EMA."""
import math

import pytest
import torch

from inception_fast.train.ema import build_ema
from inception_fast.train.optim import OPTIMIZERS, RMSpropTF, build_optimizer, param_groups
from inception_fast.train.schedule import (StaircaseDecay, build_scheduler, current_lr,
                                          scaled_lr)


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


def test_rmsprop_tf_tensor_lr_matches_float_lr():
    """A 0-dim tensor lr gives the float lr's update (the same float32 value) and is read at
    step time: filling it in place changes the next step."""
    torch.manual_seed(0)
    grads = [torch.randn(5, 3) for _ in range(3)]
    a = torch.randn(5, 3, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    lr = torch.tensor(0.25)
    oa, ob = RMSpropTF([a], lr=0.25, weight_decay=0.1), RMSpropTF([b], lr=lr, weight_decay=0.1)
    for i, g in enumerate(grads):
        if i == 2:
            lr.fill_(0.125)
            oa.param_groups[0]["lr"] = 0.125
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        assert torch.equal(a, b), i


def test_scheduler_fills_the_optimizers_tensor_lr_in_place():
    """build_optimizer's lr is a float32 tensor per group beside the parameters; LambdaLR
    fills those same tensors (what a captured step reads) with base lr x factor, computed
    from the exact float lr; current_lr gives that float."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    for name in OPTIMIZERS:
        opt = build_optimizer(name, m, 0.09, 4e-5)
        lrs = [g["lr"] for g in opt.param_groups]
        assert all(lr.dtype == torch.float32 and lr.dim() == 0 for lr in lrs)
        assert lrs[0] is not lrs[1]  # one tensor per group
        assert isinstance(opt, RMSpropTF) or opt.defaults["fused"]  # SGD: the device-lr path
        sched = build_scheduler(opt, steps_per_epoch=2, decay=0.5, decay_epochs=1,
                                warmup_epochs=0)
        for step in range(5):
            want = 0.09 * 0.5 ** (step // 2)
            assert current_lr(sched) == pytest.approx(want, rel=1e-15)
            for g, lr in zip(opt.param_groups, lrs):
                assert g["lr"] is lr and float(lr) == torch.tensor(want).item()
            opt.step()
            sched.step()


def test_optimizer_state_with_tensor_lr_saves_and_resumes_bitwise():
    """Through torch.save / load to the CPU (as a checkpoint): resumed optimizer + scheduler
    steps equal the uninterrupted ones bitwise, and each loaded lr is a tensor again beside
    its parameters (a load-state hook moves it; shown with parameters on the meta device)."""
    import io

    def make(seed=0):
        torch.manual_seed(seed)
        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        opt = build_optimizer("rmsprop", m, 0.05, 1e-2)
        return m, opt, build_scheduler(opt, steps_per_epoch=1, decay=0.9, decay_epochs=1)

    def train(m, opt, sched, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            opt.zero_grad()
            m(torch.randn(4, 4, generator=g)).square().sum().backward()
            opt.step()
            sched.step()

    m, opt, sched = make()
    train(m, opt, sched, 6, seed=1)
    m2, opt2, sched2 = make()
    train(m2, opt2, sched2, 3, seed=1)
    buf = io.BytesIO()
    torch.save({"m": m2.state_dict(), "o": opt2.state_dict(), "s": sched2.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, map_location="cpu", weights_only=False)
    m3, opt3, sched3 = make(seed=5)
    m3.load_state_dict(ck["m"])
    opt3.load_state_dict(ck["o"])
    sched3.load_state_dict(ck["s"])
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # the stream position of the first run after 3 steps
        torch.randn(4, 4, generator=g)
    for _ in range(3):
        opt3.zero_grad()
        m3(torch.randn(4, 4, generator=g)).square().sum().backward()
        opt3.step()
        sched3.step()
    for a, b in zip(m.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b)
    for ga, gb in zip(opt.param_groups, opt3.param_groups):
        assert isinstance(gb["lr"], torch.Tensor) and torch.equal(ga["lr"], gb["lr"])

    meta = torch.nn.Linear(4, 3, device="meta")
    mopt = build_optimizer("rmsprop", meta, 0.05)
    mopt.load_state_dict(build_optimizer("rmsprop", torch.nn.Linear(4, 3), 0.05).state_dict())
    assert all(g["lr"].device.type == "meta" for g in mopt.param_groups)
