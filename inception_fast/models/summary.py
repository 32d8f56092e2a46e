"""Parameter count, per-layer output shapes and forward FLOPs of a model, measured by running it
once with forward hooks (nothing tabulated, so it stays true to the code). Used by
`inception-fast info --model NAME`; works for inception_v3 and inception_v3_paper alike.

FLOPs are 2 x multiply-adds of the convolutions and linear layers (the convention of the layer
table); BN, ReLU, pooling and the element-wise rest are not counted.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..nn import ConvBNReLU


@dataclass
class LayerRow:
    name: str  # qualified module name, e.g. "Mixed_6a.branch3x3_2"
    kind: str  # module class name
    out_shape: tuple = ()  # per-image output shape: (C, H, W), or (features,)
    flops: int = 0  # forward FLOPs per image of this module's own conv / linear (0 for others)
    aux: bool = False  # part of the auxiliary head (runs in training only)

    @property
    def depth(self) -> int:
        return self.name.count(".")

    @property
    def shape_str(self) -> str:
        """H x W x C, as the paper's Table 1 writes grids ("35x35x288"); "C" for vectors."""
        if len(self.out_shape) == 3:
            c, h, w = self.out_shape
            return f"{h}x{w}x{c}"
        return "x".join(map(str, self.out_shape))


@dataclass
class ModelSummary:
    input_hw: tuple[int, int]
    params: int
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def flops(self) -> int:
        """Forward FLOPs per image for inference (the aux head excluded)."""
        return sum(r.flops for r in self.rows if not r.aux)

    @property
    def aux_flops(self) -> int:
        """Extra forward FLOPs per image of the aux head (training only)."""
        return sum(r.flops for r in self.rows if r.aux)

    def row(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r} ran in this model")

    def format(self, title: str = "model") -> str:
        h, w = self.input_hw
        lines = [f"{title}: input 3x{h}x{w}",
                 f"parameters: {self.params:,}",
                 f"forward FLOPs/image: {self.flops / 1e9:.3f} GFLOP (inference)"
                 + (f"; aux head +{self.aux_flops / 1e9:.3f} GFLOP in training"
                    if self.aux_flops else ""),
                 f"{'layer':<44s} {'type':<20s} {'output HxWxC':>14s} {'MFLOP':>9s}"]
        for r in self.rows:
            name = "  " * r.depth + r.name.rsplit(".", 1)[-1] if r.depth else r.name
            mflop = f"{r.flops / 1e6:9.1f}" if r.flops else f"{'':9s}"
            lines.append(f"{name:<44s} {r.kind:<20s} {r.shape_str:>14s} {mflop}")
        return "\n".join(lines)


def _flops(module: nn.Module, out: torch.Tensor) -> int:
    """2 x MACs per image of the module's own conv / linear, from its output and weight."""
    per_image = out.numel() // max(out.shape[0], 1)
    if isinstance(module, ConvBNReLU):
        module = module.conv  # its forward passes conv.weight to the fused op directly
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2 * per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2 * per_image * module.in_features
    return 0


def summarize(model: nn.Module, input_hw: tuple[int, int] | int | None = None,
              aux_name: str = "AuxLogits") -> ModelSummary:
    """Run `model` once (on a copy, so its BN buffers are untouched) on a batch of 2 zero-mean
    random images and record every submodule that ran: output shape and FLOPs.

    input_hw: defaults to the model's `input_size` (its variant), else 299. The copy runs in
    training mode when it has an aux head (named `aux_name`) and the input is large enough for
    it, so the aux head's rows appear too (flagged `aux`); otherwise in eval mode.
    """
    if input_hw is None:
        input_hw = getattr(model, "input_size", 299)
    if isinstance(input_hw, int):
        input_hw = (input_hw, input_hw)
    params = sum(p.numel() for p in model.parameters())
    m = copy.deepcopy(model)
    has_aux = getattr(m, aux_name, None) is not None
    m.train(has_aux)
    p0 = next(m.parameters())
    x = torch.randn(2, 3, *input_hw, generator=torch.Generator().manual_seed(0))
    x = x.to(device=p0.device, dtype=p0.dtype)
    summary = ModelSummary(input_hw=tuple(input_hw), params=params)
    index: dict[int, LayerRow] = {}
    handles = []

    def pre_hook(module, args):  # rows in call order, a block before its branches
        row = LayerRow(name=names[module], kind=type(module).__name__)
        row.aux = row.name == aux_name or row.name.startswith(aux_name + ".")
        index[id(module)] = row
        summary.rows.append(row)

    def post_hook(module, args, out):
        row = index[id(module)]
        if isinstance(out, torch.Tensor):
            row.out_shape = tuple(out.shape[1:])
            row.flops = _flops(module, out)

    names = {mod: name for name, mod in m.named_modules() if name}
    for mod in names:
        handles.append(mod.register_forward_pre_hook(pre_hook))
        handles.append(mod.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            try:
                m(x)
            except ValueError as e:
                if not (m.training and "auxiliary" in str(e)):
                    raise
                # Too small for the aux head in training: measure the inference path only.
                summary.rows.clear()
                m.eval()
                m(x)
    finally:
        for h in handles:
            h.remove()
    return summary
