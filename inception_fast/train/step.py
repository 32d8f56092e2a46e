"""One optimizer step of `inception-fast train`, from zeroing the gradients to the EMA update:
the function the trainer calls eagerly and, under --cuda-graphs, captures once and replays
(train/graphs.py). Its inputs are device tensors of a fixed shape; it reads no device value on
the host (the loss sums stay on the device), so replaying it is the same step."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .optim import state_tensors


def unpack(out):
    if isinstance(out, tuple):  # InceptionOutputs(logits, aux_logits) in training
        return out[0], out[1]
    return out, None


class TrainStep:
    """step(x, target, hard) -> the batch's softmax (record) or None.

    x the model input, target what the loss takes (class indices, or soft labels under joint
    optimization), hard the labels train accuracy is counted against. `totals` holds the
    running sums ("loss", "correct", the loss terms; float64 on the device), zeroed by reset().
    With accum micro-batches, micro-batch k takes every accum-th sample (the share a rank would
    get with accum processes, BN included)."""

    def __init__(self, model, fwd, ema, opt, scaler, loss_fn: Callable, *, autocast,
                 accum: int = 1, aux_weight: float = 0.4, clip: float = 0.0,
                 record: bool = False, ddp=None):
        self.model, self.fwd, self.ema, self.opt, self.scaler = model, fwd, ema, opt, scaler
        self.loss_fn, self.autocast, self.ddp = loss_fn, autocast, ddp
        self.accum, self.aux_weight, self.clip, self.record = accum, aux_weight, clip, record
        self.totals: dict[str, torch.Tensor] = {}

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step writes besides gradients and its outputs: what a CUDA-graph
        capture puts back after its warm-up (graphs.capture_step's `state`)."""
        return [*self.model.state_dict(keep_vars=True).values(),
                *self.ema.state_dict(keep_vars=True).values(), *state_tensors(self.opt)]

    def reset(self) -> None:
        for t in self.totals.values():
            t.zero_()

    def _add(self, name: str, v: torch.Tensor) -> None:
        # Made on first use (a capture's warm-up), then added to in place: a replay updates them.
        t = self.totals.get(name)
        if t is None:
            t = self.totals[name] = torch.zeros((), dtype=torch.float64, device=v.device)
        t.add_(v)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, hard: torch.Tensor):
        A = self.accum
        self.opt.zero_grad(set_to_none=True)
        probs = None
        for k in range(A):
            xs, ts, hs = x[k::A], target[k::A], hard[k::A]
            # DDP: all-reduce gradients only on the last micro-batch.
            quiet = self.ddp is not None and k < A - 1
            with (self.ddp.no_sync() if quiet else contextlib.nullcontext()), self.autocast():
                logits, aux = unpack(self.fwd(xs))
                loss, terms = self.loss_fn(logits, ts)
                if aux is not None:
                    loss = loss + self.aux_weight * self.loss_fn(aux, ts)[0]
            self.scaler.scale(loss / A).backward()
            with torch.no_grad():
                if self.record:
                    if probs is None:
                        probs = logits.new_empty(x.shape[0], logits.shape[1],
                                                 dtype=torch.float32)
                    probs[k::A] = F.softmax(logits.detach().float(), 1)
                n = xs.shape[0]
                self._add("loss", loss.detach().double() * n)
                self._add("correct", (logits.argmax(1) == hs).sum())
                for name, v in terms.items():
                    self._add(name, v.double() * n)
        self.scaler.unscale_(self.opt)
        if self.clip > 0:
            # foreach norm, no error_if_nonfinite: no host read of the norm.
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.ema.update_parameters(self.model)
        return probs


@dataclass
class Stage:
    """One stage's training state; `replay` is the captured step (--cuda-graphs), made on the
    stage's first batch."""
    stage: int
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    scaler: torch.amp.GradScaler
    sampler: object  # distributed.GlobalBatchSampler
    step: TrainStep
    start: int = 0
    record: bool = False
    replay: Callable | None = None


def check_cuda_graphs(device: torch.device, world: int, precision: str) -> None:
    """--cuda-graphs: what a captured training step cannot do, as clear errors."""
    if device.type != "cuda":
        why = "no CUDA GPU is available" if not torch.cuda.is_available() else "--device cpu"
        raise ValueError(f"--cuda-graphs captures the training step as a CUDA graph, which "
                         f"needs a CUDA GPU: {why}")
    if world > 1:
        raise ValueError("--cuda-graphs runs in one process (DDP's gradient all-reduce is not "
                         "captured); drop it under torchrun")
    if precision == "fp16":
        raise ValueError("--cuda-graphs with --precision fp16: fp16's GradScaler reads the "
                         "found-inf flag on the host every step; use bf16 or fp32")
