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


def collect(w: Workload, target) -> Collected:
    dt = w.torch_dtype
    with workload.triton_on_meta():
        net = workload.build_model(w.model, w.size, dt, "triton")
        with capture.ModuleLabels(net) as lab, capture.recording(target, lab) as launches, \
                traffic.AtenCounter(lambda: (lab.current(), lab.phase())) as ours:
            workload.step(net, w.shape, dt, w.mode, "triton")
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
