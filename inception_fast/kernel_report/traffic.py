"""Counting what a step moves and computes, without running it: the aten ops a step issues
(each one a GPU kernel, bar views and allocations), their bytes and FLOPs, and the bytes of the
Triton launches from their arguments; the fewest bytes per layer; the roofline model.

Bytes are counted per launch from its tensors: each tensor a kernel reads counts once (its
elements, not its storage), each tensor it writes once; re-reads that a tile schedule serves
from L2 are not counted, so both sides are counted the same way and neither is charged for
its tiling. FLOPs: torch's own flop formulas (torch.utils.flop_counter) for the aten ops; for a
layer, the same FLOPs for ours (the same maths).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from ..ops.library import NS

# H100 SXM ceilings (dense): the model's constants, not measurements.
PEAK_FLOPS = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 494e12}  # TF32
HBM_BYTES_PER_S = 3.35e12

# Ops that launch no kernel: allocation and metadata.
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
              "lift_fresh", "detach", "alias", "_local_scalar_dense", "set_", "resize_",
              "is_same_size", "_has_same_storage_numel", "sym_size", "sym_stride", "size",
              "stride", "storage_offset", "sym_numel", "sym_storage_offset", "dim",
              "_unsafe_view", "as_strided_"}  # views the schema does not mark as such


@dataclass
class Count:
    launches: int = 0
    read: int = 0
    written: int = 0
    flops: float = 0.0

    def add(self, other: "Count") -> None:
        self.launches += other.launches
        self.read += other.read
        self.written += other.written
        self.flops += other.flops

    @property
    def bytes(self) -> int:
        return self.read + self.written


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _unique(tensors):
    seen, out = set(), []
    for t in tensors:
        key = (t.data_ptr(), _nbytes(t), t.dtype)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _is_view(func) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write
               for r in func._schema.returns)


def _own_op_impl(func):
    """The Python body of one of this package's registered ops (torch.library.custom_op), or
    None. A dispatch mode sees such an op as one call and not the aten ops and Triton
    launches inside it; running the body under the mode again counts those instead. torch has
    no public accessor for a custom op's function, hence the registry lookup."""
    if getattr(func, "namespace", None) != NS:
        return None
    from torch._library.custom_ops import _maybe_get_opdef

    opdef = _maybe_get_opdef(func._schema.name)
    return None if opdef is None else opdef._init_fn


class AtenCounter(TorchDispatchMode):
    """Counts every kernel-launching aten op by (layer, phase): bytes of its tensor inputs,
    outputs and mutated arguments, and its FLOPs."""

    def __init__(self, where):
        super().__init__()
        self.where = where  # () -> (layer, phase)
        self.counts: dict[tuple[str, str], Count] = defaultdict(Count)
        self.ops: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        impl = _own_op_impl(func)
        if impl is not None:  # one of ours: no kernel itself; count what its body issues
            with self:
                return impl(*args, **kwargs)
        out = func(*args, **kwargs)
        name = func._schema.name.split("::")[-1]
        if name in _NO_KERNEL or _is_view(func):
            return out
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        mutated = [a for a, arg in zip(args, func._schema.arguments)
                   if isinstance(a, torch.Tensor) and arg.alias_info is not None
                   and arg.alias_info.is_write]
        flops = 0
        f = flop_registry.get(func._overloadpacket)
        if f is not None:
            flops = f(*args, **kwargs, out_val=out)
        c = self.counts[self.where()]
        c.add(Count(1, sum(map(_nbytes, _unique(ins))),
                    sum(map(_nbytes, _unique(outs + mutated))), flops))
        self.ops[name] += 1
        return out


@dataclass
class ModuleIO:
    """Fewest HBM bytes of each top-level module: each input, parameter and output once
    forward; backward the output gradient, the input and output (what BN + ReLU backward
    needs), the parameters, and the input and parameter gradients once each."""
    fwd: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bwd: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def hook(self, name: str, train: bool):
        def record(module, args, out):
            xs = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
            ys = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            ps = sum(_nbytes(p) for p in module.parameters()) + \
                sum(_nbytes(b) for b in module.buffers())
            x, y = sum(map(_nbytes, xs)), sum(map(_nbytes, ys))
            self.fwd[name] += x + y + ps
            if train:
                self.bwd[name] += 2 * y + 2 * x + 2 * ps
        return record


def roofline_s(flops: float, nbytes: float, dtype: torch.dtype) -> float:
    """The roofline time (a model): max(FLOPs / peak, bytes / HBM bandwidth)."""
    return max(flops / PEAK_FLOPS[dtype], nbytes / HBM_BYTES_PER_S)


def launch_bytes(tensors, access: dict[str, set[str]]) -> tuple[int, int]:
    """(read, written) bytes of one Triton launch from its tensor arguments and the kernel's
    read / write sets (ir.pointer_access); a tensor passed twice counts once."""
    def total(names):
        seen, n = set(), 0
        for t in tensors:
            if t.name in names and (t.ptr, t.nbytes) not in seen:
                seen.add((t.ptr, t.nbytes))
                n += t.nbytes
        return n
    return total(access["read"]), total(access["write"])


def top_level(layer: str) -> str:
    return layer.split(".", 1)[0]
