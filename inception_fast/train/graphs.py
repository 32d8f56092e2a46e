"""A whole training step (forward, backward, clipping, optimizer, EMA) as one CUDA graph, and
the host-sync counter that says whether a step can be captured at all.

    step = capture_step(fn, *static_inputs)   fn(*static_inputs) runs one step and returns
                                              tensors; capture_step warms it up on a side
                                              stream, captures it, and returns a callable
    outs = step(*inputs)                      copies inputs into the static ones, replays

What a captured step may not do (torch.cuda.graphs): read a device value on the host (.item(),
bool(t), float(t): SyncCounter counts those), branch on one, allocate outside the graph's pool
per step, or use a Python number that changes between steps (a scheduler's lr is baked in at
capture: keep the lr constant, or use an optimizer that reads it from a tensor). Host caches
in the ops are bypassed while capturing (ops/param_cache.py), so replays see updated weights.
"""
from __future__ import annotations

from typing import Callable

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


def capture_step(fn: Callable[..., object], *static_inputs: torch.Tensor, warmup: int = 3):
    """fn(*static_inputs), warmed up `warmup` times on a side stream (autotuning, cuBLAS
    workspaces and the optimizer's state are created there) and captured as a CUDA graph.
    Returns step(*inputs): copies each input into its static tensor, replays the graph and
    returns fn's outputs (static tensors, overwritten by the next replay)."""
    if not torch.cuda.is_available():
        raise RuntimeError("capture_step: CUDA graphs need a CUDA GPU")
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
        return outs

    step.graph = graph
    return step
