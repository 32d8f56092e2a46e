"""Run a workload with every Triton launch recorded instead of run.

The ops run with the interpreter off, so every host decision (autotune lists, block sizes,
kernel choice) is the GPU's; each launch is specialized as the JIT would (jit_launch.py) for
each autotune config the kernel's pruning keeps, and nothing executes: outputs hold whatever
the allocator gave, which the workloads only pass on. Tensors may be CPU or meta (meta makes
a 299x299 batch-256 step free of memory).

Each launch is attributed to the innermost named module running it: forward through module
hooks, backward through the autograd node that runs (its metadata is labelled at forward)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from .jit_launch import Specialized, specialize
from ..ops.deferred import tensor_of
from ..ops.library import implementations_on_meta

LABEL = "inception_fast_layer"


@dataclass
class TensorArg:
    name: str
    ptr: int
    nbytes: int  # the elements the view holds (not its storage)
    dtype: torch.dtype


@dataclass
class Launch:
    kernel: str
    layer: str
    phase: str               # "forward" | "backward"
    variants: list[Specialized]  # one per autotune config kept (one for a plain launch)
    tensors: list[TensorArg] = field(default_factory=list)


class ModuleLabels:
    """Which named module is running: a stack from global forward hooks; at each module's
    forward end, the autograd nodes its output created (not already claimed by an inner
    module) are labelled with its name for the backward pass."""

    def __init__(self, model: torch.nn.Module):
        self.names = {id(m): n for n, m in model.named_modules() if n}
        self.stack: list[str] = []
        self.handles = []

    def current(self) -> str:
        if torch.is_grad_enabled() is False or not self.stack:
            node = torch._C._current_autograd_node()
            if node is not None:
                return node.metadata.get(LABEL, "(backward)")
        return self.stack[-1] if self.stack else "(top)"

    def phase(self) -> str:
        return "backward" if torch._C._current_autograd_node() is not None else "forward"

    def _pre(self, module, args):
        name = self.names.get(id(module))
        if name is not None:
            self.stack.append(name)

    def _post(self, module, args, out):
        name = self.names.get(id(module))
        if name is None:
            return
        self.stack.pop()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        outs = [tensor_of(t) for t in outs]  # a deferred activation: its pre-BN output's nodes
        todo = [t.grad_fn for t in outs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or LABEL in node.metadata:
                continue
            node.metadata[LABEL] = name
            todo.extend(n for n, _ in node.next_functions)

    def __enter__(self):
        from torch.nn.modules import module as mod
        self.handles = [mod.register_module_forward_pre_hook(self._pre),
                        mod.register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _detached(spec: Specialized) -> Specialized:
    """The record keeps meta stand-ins (shape, strides, dtype and byte offset, so the same
    specialization), not the launch's tensors: a tensor the record still referenced would make
    autograd copy a gradient it would otherwise take over (AccumulateGrad steals only a tensor
    nothing else holds), an aten copy that a real launch does not cause."""
    def stand_in(v):
        if not isinstance(v, torch.Tensor):
            return v
        base = torch.empty(v.untyped_storage().nbytes() // v.element_size(), dtype=v.dtype,
                           device="meta")
        return base.as_strided(v.shape, v.stride(), v.storage_offset())
    spec.bound = {k: stand_in(v) for k, v in spec.bound.items()}
    return spec


def _tensor_args(jit: JITFunction, bound: dict) -> list[TensorArg]:
    out = []
    for p in jit.params:
        v = bound.get(p.name)
        if isinstance(v, torch.Tensor):
            out.append(TensorArg(p.name, v.data_ptr(), v.numel() * v.element_size(), v.dtype))
    return out


@contextlib.contextmanager
def recording(target, labels: ModuleLabels | None = None):
    """Inside: every JIT launch and autotuned launch appends a Launch to the yielded list."""
    launches: list[Launch] = []
    saved = JITFunction.run, Autotuner.run

    def where():
        return (labels.current(), labels.phase()) if labels else ("(top)", "forward")

    def jit_run(self, *args, grid, warmup, **kwargs):
        spec = specialize(self, args, kwargs, target)
        layer, phase = where()
        tensors = _tensor_args(self, spec.bound)
        launches.append(Launch(self.fn.__name__, layer, phase, [_detached(spec)], tensors))

    def autotuner_run(self, *args, **kwargs):
        # As Autotuner.run: prune only when there is a choice; each kept config is compiled
        # (and benchmarked) on a GPU's first call.
        kwargs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
        self.nargs = dict(zip(self.arg_names, args))
        configs = self.prune_configs(kwargs) if len(self.configs) > 1 else self.configs
        specs = [specialize(self.fn, args, {**kwargs, **c.all_kwargs()}, target)
                 for c in configs]
        self.nargs = None
        layer, phase = where()
        tensors = _tensor_args(self.fn, specs[0].bound)
        launches.append(Launch(self.fn.fn.__name__, layer, phase, [_detached(s) for s in specs],
                               tensors))

    JITFunction.run, Autotuner.run = jit_run, autotuner_run
    try:
        with implementations_on_meta():  # registered ops run their host code, not fakes
            yield launches
    finally:
        JITFunction.run, Autotuner.run = saved
