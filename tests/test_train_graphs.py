"""`inception-fast train --cuda-graphs`: the trainer's step captured once and replayed.

On CPU: the clear errors, and the trainer's capture plumbing with a CPU stand-in for the
capture (warm-up steps undone, sums reset, RNG put back) giving bit-identical runs. On a GPU
(`gpu`): real captures, against eager runs of the same settings."""
from __future__ import annotations

import json

import pytest
import torch

from inception_fast.cli import main
from inception_fast.train import loop
from inception_fast.train.cli import parse_args
from inception_fast.train.graphs import undone
from inception_fast.train.step import check_cuda_graphs

# Tiny but every layer: the 79 variant at 21 px (its minimum), 4 digits per step.
TINY = ["--variant", 79, "--image-size", 21, "--train-subset", 16, "--test-subset", 8,
        "--batch-size", 4, "--eval-batch-size", 8]


def trainer_stage(*argv, stage: int = 1):
    """The trainer's pieces for `inception-fast train argv`: (run, stage, first batch's step
    inputs). stage.step is the exact function --cuda-graphs captures."""
    args = parse_args(["--quiet", *map(str, argv)])
    run = loop.Run(args, log=lambda *a, **k: None)
    run.aux = args.aux_on
    st = run.setup_stage(stage, None)
    x, idx = next(iter(run.ds.train.batches(st.sampler.batches()[:1], 0)))
    return run, st, run.batch_inputs(st, x, torch.as_tensor(idx), run.labels.hard)


def _train(out, *argv) -> int:
    return main(["train", "--quiet", "--out", str(out), *map(str, argv)])


def _close_runs(a, b, tol):
    """Two --out folders: weights and EMA within tol, per-epoch metrics within 1e-3."""
    ma, mb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    for part in ("model", "ema"):
        for k, v in ma[part].items():
            torch.testing.assert_close(mb[part][k], v, **tol, msg=f"{part} {k}")
    la = [json.loads(line) for line in open(a / "metrics.jsonl")]
    lb = [json.loads(line) for line in open(b / "metrics.jsonl")]
    assert len(la) == len(lb)
    for ra, rb in zip(la, lb):
        for k in ra.keys() - {"epoch_s", "train_s"}:
            assert rb[k] == pytest.approx(ra[k], rel=1e-3, abs=1e-4), k


def test_cuda_graphs_without_a_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        argv = ["--device", "cpu"]
        why = "--device cpu"
    else:
        argv, why = [], "no CUDA GPU is available"
    assert main(["train", "--quiet", "--cuda-graphs", *argv]) == 2
    err = capsys.readouterr().err
    assert "--cuda-graphs" in err and "needs a CUDA GPU" in err and why in err, err


@pytest.mark.parametrize("call, msg", [
    (lambda: check_cuda_graphs(torch.device("cuda"), 2, "bf16"), "one process"),
    (lambda: check_cuda_graphs(torch.device("cuda"), 1, "fp16"), "GradScaler"),
    (lambda: parse_args(["--cuda-graphs", "--compile"]), "choose one"),
])
def test_cuda_graphs_refuses_what_it_cannot_capture(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
    check_cuda_graphs(torch.device("cuda"), 1, "bf16")  # the supported case passes


def test_undone_puts_state_and_rng_back():
    """Steps run under undone() leave the state and the RNG as they were: the next eager step
    is bit-identical to that of a twin that never ran them (RMSprop's state created up front,
    dropout drawing from the restored RNG)."""
    _, st, inputs = trainer_stage(*TINY)
    _, twin, _ = trainer_stage(*TINY)
    rng = torch.get_rng_state()
    with undone(st.step.state()):
        for _ in range(2):
            st.step(*inputs)
    assert torch.equal(torch.get_rng_state(), rng)
    st.step(*inputs)
    torch.set_rng_state(rng)  # the two share the global generator: the same draws for twin
    twin.step(*inputs)
    for a, b in zip(st.step.state(), twin.step.state()):
        assert torch.equal(a, b)


def _cpu_capture(fn, *static_inputs, warmup=3, state=()):
    """capture_step's host logic without CUDA: warm-up and 'capture' (one more call) undone,
    then every call runs fn on the static inputs, as a replay does."""
    state = list(state)
    with undone(state):
        for _ in range(warmup + 1):
            fn(*static_inputs)

    def step(*inputs):
        for s, x in zip(static_inputs, inputs):
            s.copy_(x)
        return fn(*static_inputs)
    return step


def _run(*argv):
    """`inception-fast train argv` in memory (no checkpoint files): (history, final weights)."""
    args = parse_args(["--quiet", *map(str, argv)])
    run = loop.Run(args, log=lambda *a, **k: None)
    run.aux = args.aux_on
    stages = [(1, args.epochs)] + ([(2, args.stage2_epochs)] if args.joint_opt else [])
    finals = []
    for stage, epochs in stages:
        assert run.run_stage(stage, epochs, None) == "done"
        finals += [t for m in run.final_model for t in m.state_dict().values()]
    drop = ("epoch_s", "train_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in run.history], finals


@pytest.mark.parametrize("extra", [
    ["--epochs", 2],  # RMSprop, label smoothing, dropout 0.5, evaluation between epochs
    ["--epochs", 1, "--stage2-epochs", 1, "--optimizer", "sgd", "--joint-opt", "--begin", 1,
     "--accum-steps", 2, "--warmup-epochs", 1, "--noise", "symmetric", "--noise-rate", 0.3],
], ids=["rmsprop", "sgd-joint-opt-accum"])
def test_trainer_capture_plumbing_is_exact_on_cpu(monkeypatch, extra):
    """The --cuda-graphs path of the trainer (capture on each stage's first batch, its warm-up
    undone, the sums reset, static inputs refilled per step) with a CPU stand-in for the
    capture: the run equals the plain one bitwise (weights, EMA, metrics)."""
    argv = [*TINY, "--train-subset", 8, *extra]
    want_hist, want = _run(*argv)
    calls = []
    monkeypatch.setattr(loop, "check_cuda_graphs", lambda *a: None)
    monkeypatch.setattr(loop, "capture_step",
                        lambda *a, **k: calls.append(1) or _cpu_capture(*a, **k))
    got_hist, got = _run(*argv, "--cuda-graphs")
    assert len(calls) == (2 if "--joint-opt" in extra else 1)  # once per stage
    assert got_hist == want_hist
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cuda_graphs_trainer_matches_eager_on_gpu(tmp_path, backend):
    """Real capture and replay: 2 epochs of 4 steps, the lr changing every step (warm-up),
    evaluation between epochs (host caches must see the replayed weights). No dropout: a
    replay draws other random numbers than eager."""
    argv = [*TINY, "--epochs", 2, "--warmup-epochs", 2, "--dropout", 0, "--backend", backend]
    assert _train(tmp_path / "eager", *argv) == 0
    assert _train(tmp_path / "graphs", *argv, "--cuda-graphs") == 0
    _close_runs(tmp_path / "eager", tmp_path / "graphs", tol=dict(rtol=1e-3, atol=1e-4))
