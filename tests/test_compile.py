"""The fused model under torch.compile(fullgraph=True), torch.export and CUDA graphs.

Every kernel call is a registered op (ops/library.py), so Dynamo traces each fused block whole
(no graph break: fullgraph=True raises on one) and the compiled module gives the eager
results: training (outputs, every gradient, BN running statistics) and eval. CPU: Triton's
interpreter runs the kernels; "aot_eager" keeps the test to what is ours (tracing, the
registered ops' fakes and the autograd split), not inductor's CPU code generation.
The training step (forward, backward, clipping, RMSProp, EMA) makes no host sync (the
dispatch-mode counter of train/graphs.py), which is what lets it be captured as a CUDA graph:
for a fused block, and for the exact step `inception-fast train --cuda-graphs` captures, with its
lr a device tensor that the scheduler fills between steps. The capture and replay themselves are
`gpu` tests (here and tests/test_train_graphs.py)."""
from __future__ import annotations

import copy

import pytest
import torch

import inception_fast
from inception_fast import nn as ifnn
from inception_fast.losses import label_smoothing_cross_entropy
from inception_fast.train.ema import build_ema
from inception_fast.train.graphs import SyncCounter, capture_step
from inception_fast.train.optim import RMSpropTF, state_tensors
from inception_fast.train.schedule import build_scheduler
from test_train_graphs import TINY, trainer_stage

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
CL = torch.channels_last
TOL = dict(rtol=2e-4, atol=2e-5)

BLOCKS = {  # name: (constructor, input channels, H = W)
    "A": (lambda c: ifnn.InceptionA(c, pool_features=8, backend="triton"), 6, 5),
    "B": (lambda c: ifnn.InceptionB(c, backend="triton"), 5, 7),
    "C": (lambda c: ifnn.InceptionC(c, channels_7x7=8, backend="triton"), 6, 5),
    "D": (lambda c: ifnn.InceptionD(c, backend="triton"), 5, 7),
    "E": (lambda c: ifnn.InceptionE(c, backend="triton"), 6, 3),
}


def _block(name):
    make, c_in, hw = BLOCKS[name]
    torch.manual_seed(0)
    block = make(c_in).to(DEV)
    with torch.no_grad():  # BN beta away from 0: no ReLU mask flips between two runs
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(1.0, 2.0)
    x = torch.randn(2, c_in, hw, hw, device=DEV).contiguous(memory_format=CL)
    return block, x


def _train_step(mod, x):
    xi = x.clone().requires_grad_()
    y = mod(xi)
    y.square().sum().backward()
    return y.detach(), xi.grad


@pytest.mark.parametrize("name", list(BLOCKS))
def test_fused_block_fullgraph_compile_matches_eager(name):
    eager, x = _block(name)
    traced = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    eager.train(), traced.train()
    y0, gx0 = _train_step(eager, x)
    y1, gx1 = _train_step(compiled, x)
    torch.testing.assert_close(y1, y0, **TOL)
    torch.testing.assert_close(gx1, gx0, **TOL)
    for (k, p), q in zip(eager.named_parameters(), traced.parameters()):
        torch.testing.assert_close(q.grad, p.grad, **TOL, msg=k)
    for (k, b), c in zip(eager.named_buffers(), traced.buffers()):
        torch.testing.assert_close(c, b, **TOL, msg=k)
    eager.eval(), traced.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), **TOL)


def _small_model():
    torch.manual_seed(0)
    return inception_fast.inception_v3(backend="triton", input_size=79, aux_logits=False,
                                       num_classes=10, init_weights=False).to(DEV)


def test_model_eval_fullgraph_compile_and_export():
    model = _small_model().eval()
    # 29x29: above the 79-variant's minimum of 21 (every layer still runs; 1/7 of 79's pixels)
    x = torch.randn(1, 3, 29, 29, device=DEV).contiguous(memory_format=CL)
    with torch.no_grad():
        want = model(x)
        torch._dynamo.reset()
        got = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
        exported = torch.export.export(model, (x,))
        again = exported.module()(x)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(again, want, **TOL)
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("inception_fast" in o for o in ops), "the export holds our registered ops"
    assert not any("aten.cat" in o for o in ops), "no torch.cat in the fused model"


def _step_parts():
    """A fused block + head with the paper's training step; its lr a device tensor that the
    scheduler halves after every step (step.sched)."""
    block, x = _block("C")
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 192, 7)).to(DEV)
    model = torch.nn.Sequential(block, head).train()
    opt = RMSpropTF(model.parameters(), lr=torch.tensor(0.01, device=DEV))
    opt.init_state()
    sched = build_scheduler(opt, steps_per_epoch=1, decay=0.5, decay_epochs=1)
    ema = build_ema(model, 0.99)
    target = torch.arange(2, device=DEV) % 7

    def step(x, target):
        opt.zero_grad(set_to_none=True)
        # check_values=False: labels validated once, as the trainer does (no per-step read)
        loss = label_smoothing_cross_entropy(model(x), target, 0.1, backend="triton",
                                             check_values=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        ema.update_parameters(model)
        return loss.detach()
    step.opt, step.sched = opt, sched
    step.state = [*model.state_dict(keep_vars=True).values(),
                  *ema.state_dict(keep_vars=True).values(), *state_tensors(opt)]
    return model, ema, step, x, target


def test_training_step_makes_no_host_sync():
    _, _, step, x, target = _step_parts()
    step(x, target)  # first step: caches
    with SyncCounter() as syncs:
        step.sched.step()
        step(x, target)
    assert syncs.count == 0, syncs.events


def test_sync_counter_sees_a_sync_inside_a_step():
    """The counter can fail: a loss read on the host (as a logging line would) is counted."""
    _, _, step, x, target = _step_parts()
    with SyncCounter() as syncs:
        float(step(x, target))
    assert syncs.count == 1, syncs.events


TRAINER_CASES = {  # the trainer's step: optimizer, loss, accumulation, lr changing every step
    "rmsprop": [*TINY, "--warmup-epochs", 1],
    "sgd-joint-opt-accum": [*TINY, "--warmup-epochs", 1, "--optimizer", "sgd", "--joint-opt",
                            "--accum-steps", 2],
}


@pytest.mark.parametrize("case", list(TRAINER_CASES))
def test_trainer_step_makes_no_host_sync_with_a_scheduled_tensor_lr(case):
    """The step --cuda-graphs captures (train/step.py, built as the trainer builds it), then a
    scheduler step, then the step again: no host sync. The scheduler fills the same lr tensor
    the optimizer holds (a captured step reads it on every replay) with a new value."""
    _, st, inputs = trainer_stage(*TRAINER_CASES[case])
    st.step(*inputs)  # first step: caches, the loss sums
    lrs = [g["lr"] for g in st.opt.param_groups]
    assert all(isinstance(lr, torch.Tensor) and lr.device == inputs[0].device for lr in lrs)
    before = [lr.clone() for lr in lrs]
    with SyncCounter() as syncs:
        st.sched.step()
        st.step(*inputs)
        st.sched.step()
    assert syncs.count == 0, syncs.events
    for g, lr, old in zip(st.opt.param_groups, lrs, before):
        assert g["lr"] is lr and not torch.equal(lr, old)


def test_trainer_step_reads_the_lr_the_scheduler_set():
    """One step from the same state, inputs and RNG at two learning rates: RMSprop's first
    momentum buffer is lr * g / sqrt(ms + eps), so halving the tensor in place (as the
    scheduler does between replays) halves the update the same step function makes."""
    from inception_fast.train.graphs import undone

    _, st, inputs = trainer_stage(*TINY)
    lr = st.opt.param_groups[0]["lr"]
    bufs = [st.opt.state[p]["momentum_buffer"] for p in st.opt.param_groups[0]["params"]]
    with undone(st.step.state()):
        st.step(*inputs)
        full = [b.clone() for b in bufs]
    for g in st.opt.param_groups:
        g["lr"].mul_(0.5)
    st.step(*inputs)
    assert any(b.abs().max() > 0 for b in full)
    for b, f in zip(bufs, full):
        torch.testing.assert_close(b, 0.5 * f, rtol=1e-6, atol=1e-12)
    assert lr is st.opt.param_groups[0]["lr"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_graph_training_step_matches_eager():
    """Replays of the captured step give the eager steps' losses, weights and EMA, with the
    scheduler halving the lr tensor between replays (a baked-in lr would diverge from the
    second step); the capture itself trains nothing (its warm-up is undone: `state`)."""
    model, ema, step, x, target = _step_parts()
    twin, twin_ema, twin_step, _, _ = _step_parts()  # the same seeds: the same start
    graphed = capture_step(twin_step, x.clone(), target.clone(), warmup=3,
                           state=twin_step.state)
    for _ in range(4):
        want = step(x, target)
        got = graphed(x, target)
        step.sched.step()
        twin_step.sched.step()
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    for (k, p), q in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=k)
    for (k, p), q in zip(ema.state_dict().items(), twin_ema.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=k)
