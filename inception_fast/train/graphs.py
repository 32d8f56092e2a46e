"""A whole training step (forward, backward, clipping, optimizer, EMA) as one CUDA graph, and
the host-sync counter that says whether a step can be captured at all.

    step = capture_step(fn, *static_inputs, state=tensors)
                                              fn(*static_inputs) runs one step and returns
                                              tensors; capture_step warms it up on a side
                                              stream, captures it, puts `state` back as it
                                              was, and returns a callable
    outs = step(*inputs)                      copies inputs into the static ones, replays

What a captured step may not do (torch.cuda.graphs): read a device value on the host (.item(),
bool(t), float(t): SyncCounter counts those), branch on one, allocate outside the graph's pool
per step, or use a Python number that changes between steps. A learning rate that changes must
be a device tensor the optimizer reads on the device (train/optim.py) and the scheduler fills
in place (train/schedule.py). Host caches in the ops are bypassed while capturing
(ops/param_cache.py); after each replay the step bumps the version of every `state` tensor, so
an eager call afterwards (evaluation) does not hit a cache keyed on the pre-replay weights.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..ops.library import NS, implementation

_aten = torch.ops.aten
# The aten ops whose result the host must wait for (each is a device->host sync on a GPU).
SYNC_OPS = {_aten._local_scalar_dense.default, _aten.is_nonzero.default,
            _aten.equal.default, _aten.nonzero.default, _aten.masked_select.default,
            _aten.unique_consecutive.default, _aten._unique2.default}


def _caller() -> str:
    """The innermost frame outside torch: where the host read was asked for."""
    import traceback

    for f in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in f.filename and not f.filename.endswith("graphs.py"):
            return f"{f.filename}:{f.lineno} ({f.line})"
    return "?"


class SyncCounter(TorchDispatchMode):
    """Counts the host syncs in the code it wraps, including inside the inception_fast ops'
    own implementations (a registered op is entered as one call; this mode looks inside).
    `events` names each one; on CPU tensors it counts what would be a sync on a GPU."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []

    @property
    def count(self) -> int:
        return len(self.events)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            self.events.append(f"{func} at {_caller()}")
        if func.namespace == NS:
            with self:  # count what the op's implementation does too
                return implementation(func)(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def undone(state: Iterable[torch.Tensor]):
    """Runs the block, then puts back the values `state` had before it and the CPU (and CUDA)
    RNG states: steps run inside it leave no trace but what they allocated."""
    state = list(state)
    with torch.no_grad():
        saved = [t.detach().clone() for t in state]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(state, saved):
                t.copy_(s)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng)


def capture_step(fn: Callable[..., object], *static_inputs: torch.Tensor, warmup: int = 3,
                 state: Iterable[torch.Tensor] = ()):
    """fn(*static_inputs), warmed up `warmup` times on a side stream (autotuning, cuBLAS
    workspaces and the optimizer's state are created there) and captured as a CUDA graph.

    state: every tensor the step mutates (weights, buffers, optimizer state, EMA). The warm-up
    and the capture run the step for real; their values from before, and the CPU and CUDA RNG
    states, are put back afterwards, so capturing trains nothing. They must exist before the
    call (create lazily made optimizer state first: train/optim.py's init_state).

    Returns step(*inputs): copies each input into its static tensor, replays the graph, bumps
    the versions of `state` (the replay writes them behind autograd's back) and returns fn's
    outputs (static tensors, overwritten by the next replay)."""
    if not torch.cuda.is_available():
        raise RuntimeError("capture_step: CUDA graphs need a CUDA GPU, and none is available")
    state = list(state)
    with undone(state):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = fn(*static_inputs)

    def step(*inputs):
        for s, x in zip(static_inputs, inputs):
            s.copy_(x, non_blocking=True)
        graph.replay()
        if state:
            torch.autograd.graph.increment_version(state)
        return outs

    step.graph = graph
    return step
