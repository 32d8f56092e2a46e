"""One workload (model, size, batch, dtype, mode) run twice on meta tensors: on the Triton
backend with every launch recorded (capture.py) and every aten op counted, and on the torch
backend (eager cuDNN's op sequence: conv, batch_norm, relu, cat) with its aten ops counted and
each top-level module's fewest bytes recorded."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from . import capture, traffic, workload


@dataclass
class Workload:
    model: str
    size: int
    batch: int
    dtype: str  # "bf16" | "fp16" | "fp32"
    mode: str   # "train" | "train-joint" | "eval"

    @property
    def torch_dtype(self) -> torch.dtype:
        return workload.DTYPES[self.dtype]

    @property
    def shape(self) -> tuple[int, ...]:
        return workload.input_shape(self.model, self.batch, self.size)

    @property
    def tag(self) -> str:
        size = "x".join(map(str, self.shape[1:])) if self.model == "units" else self.size
        return f"{self.model} {size} b{self.batch} {self.dtype} {self.mode}"

    @property
    def where(self) -> str:
        """How the kernel table names this workload (the model only when not the default)."""
        model = "" if self.model == "inception_v3" else f"{self.model} "
        return f"{model}{self.dtype} {self.mode}"


@dataclass
class Collected:
    work: Workload
    launches: list[capture.Launch]
    ours_aten: traffic.AtenCounter
    eager_aten: traffic.AtenCounter
    fewest: traffic.ModuleIO


def record_launches(w: Workload, target, count_aten: bool = False):
    """(launches, aten counter or None): one step of `w` on the Triton backend, every launch
    recorded (with every autotune config its pruning keeps) for `target`. Eval counts a second
    call (serving's steady state: BN folded once into cached weights); a training step repacks
    the weights the optimizer changed, so its one step is the steady state."""
    dt = w.torch_dtype
    with workload.triton_on_meta():
        net = workload.build_model(w.model, w.size, dt, "triton")
        with capture.ModuleLabels(net) as lab, capture.recording(target, lab) as launches, \
                contextlib.ExitStack() as stack:
            if w.mode == "eval":  # steady state: the first call folds BN into cached weights
                workload.step(net, w.shape, dt, w.mode, "triton")
                launches.clear()
            ours = stack.enter_context(traffic.AtenCounter(
                lambda: (lab.current(), lab.phase()))) if count_aten else None
            workload.step(net, w.shape, dt, w.mode, "triton")
    return launches, ours


def select(launches, configs: str) -> dict:
    """The variants to compile, by cache key: every config each launch's pruning keeps
    ("all"), or the first one only ("first": what the GPU would compile first; enough for
    traffic and structure)."""
    chosen = {}
    for la in launches:
        for spec in (la.variants if configs == "all" else la.variants[:1]):
            chosen.setdefault(spec.cache_key(), spec)
    return chosen


def collect(w: Workload, target) -> Collected:
    dt = w.torch_dtype
    launches, ours = record_launches(w, target, count_aten=True)
    ref = workload.build_model(w.model, w.size, dt, "torch")
    fewest = traffic.ModuleIO()
    hooks = [m.register_forward_hook(fewest.hook(n, w.mode != "eval"))
             for n, m in ref.named_children()]
    with capture.ModuleLabels(ref) as lab, \
            traffic.AtenCounter(lambda: (lab.current(), lab.phase())) as eager:
        workload.step(ref, w.shape, dt, w.mode, "torch")
    for h in hooks:
        h.remove()
    return Collected(w, launches, ours, eager, fewest)
