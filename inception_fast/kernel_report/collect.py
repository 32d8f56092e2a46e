"""One workload (model, size, batch, dtype, mode) run twice on meta tensors: on the Triton
backend with every launch recorded (capture.py) and every aten op counted, and on the torch
backend (eager cuDNN's op sequence: conv, batch_norm, relu, cat) with its aten ops counted and
each top-level module's fewest bytes recorded."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import capture, traffic, workload


@dataclass
class Workload:
    model: str
    size: int
    batch: int
    dtype: str  # "bf16" | "fp16" | "fp32"
    mode: str   # "train" | "eval"

    @property
    def torch_dtype(self) -> torch.dtype:
        return workload.DTYPES[self.dtype]

    @property
    def tag(self) -> str:
        return f"{self.model} {self.size} b{self.batch} {self.dtype} {self.mode}"


@dataclass
class Collected:
    work: Workload
    launches: list[capture.Launch]
    ours_aten: traffic.AtenCounter
    eager_aten: traffic.AtenCounter
    fewest: traffic.ModuleIO


def collect(w: Workload, target) -> Collected:
    dt = w.torch_dtype
    with workload.triton_on_meta():
        net = workload.build_model(w.model, w.size, dt, "triton")
        with capture.ModuleLabels(net) as lab, capture.recording(target, lab) as launches, \
                traffic.AtenCounter(lambda: (lab.current(), lab.phase())) as ours:
            workload.step(net, w.batch, w.size, dt, w.mode)
    ref = workload.build_model(w.model, w.size, dt, "torch")
    fewest = traffic.ModuleIO()
    hooks = [m.register_forward_hook(fewest.hook(n, w.mode == "train"))
             for n, m in ref.named_children()]
    with capture.ModuleLabels(ref) as lab, \
            traffic.AtenCounter(lambda: (lab.current(), lab.phase())) as eager:
        workload.step(ref, w.batch, w.size, dt, w.mode)
    for h in hooks:
        h.remove()
    return Collected(w, launches, ours, eager, fewest)
