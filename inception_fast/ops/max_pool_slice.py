"""max_pool2d(x, 3, stride=2) written into a channel slice of a block output (the pool branch
of the grid reductions Mixed_6a / Mixed_7a), and its pure-torch reference.

    max_pool3x3s2_into(x, out, offset, backend) -> out[:, offset:offset + C] (a view)

Triton backend: kernels/max_pool3x3s2.py (argmax kept as uint8, backward a gather). Used when
the CUDA grid-reduction op (inception_fast/ops/grid_reduction.py) is not the chosen backend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.graph import increment_version

from .. import backends


def _check(x, out, offset):
    what = "max_pool3x3s2_into"
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{what}: input must be a 4-D (N, C, H, W) tensor")
    n, c, h, w = x.shape
    if h < 3 or w < 3:
        raise ValueError(f"{what}: input must be at least 3x3, got {h}x{w}")
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    if out.dim() != 4 or out.shape[0] != n or tuple(out.shape[2:]) != (oh, ow):
        raise ValueError(f"{what}: out has shape {tuple(out.shape)}, expected "
                         f"({n}, C_total, {oh}, {ow})")
    if offset < 0 or offset + c > out.shape[1]:
        raise ValueError(f"{what}: slice [{offset}, {offset + c}) does not fit in out with "
                         f"{out.shape[1]} channels")
    if out.dtype != x.dtype or out.device != x.device:
        raise TypeError(f"{what}: out is {out.dtype} on {out.device}, the input {x.dtype} on "
                        f"{x.device}")


def max_pool3x3s2_reference(x, out, offset):
    view = out[:, offset:offset + x.shape[1]]
    view.copy_(F.max_pool2d(x, 3, 2))
    return view


class _MaxPoolIntoFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out, offset):
        from ..kernels.max_pool3x3s2 import max_pool3x3s2_fwd

        _, idx = max_pool3x3s2_fwd(x, out=out[:, offset:offset + x.shape[1]])
        ctx.save_for_backward(idx)
        ctx.cfg = (offset, tuple(x.shape[2:]))
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        from ..kernels.max_pool3x3s2 import max_pool3x3s2_bwd

        (idx,) = ctx.saved_tensors
        offset, hw = ctx.cfg
        g = grad[:, offset:offset + idx.shape[1]]  # a view: no copy
        dx = max_pool3x3s2_bwd(g, idx, hw) if ctx.needs_input_grad[0] else None
        dout = None
        if ctx.needs_input_grad[1]:  # the blocks pass a fresh `out`: this copy never runs there
            dout = grad.clone()
            dout[:, offset:offset + idx.shape[1]] = 0
        return dx, dout, None


def max_pool3x3s2_into(x, out, offset, *, backend="torch"):
    """max_pool2d(x, 3, 2) into out[:, offset:offset + C]; returns that view."""
    _check(x, out, offset)
    b = backends.resolve(backend, x)
    if b == "cuda":
        b = "triton" if backends.why_unavailable("triton") is None else "torch"
    if b == "torch":
        return max_pool3x3s2_reference(x, out, offset)
    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        res = _MaxPoolIntoFn.apply(x, out, offset)
        return res[:, offset:offset + x.shape[1]]
    from ..kernels.max_pool3x3s2 import max_pool3x3s2_fwd

    view = out[:, offset:offset + x.shape[1]]
    max_pool3x3s2_fwd(x, out=view)
    try:
        increment_version(out)
    except RuntimeError:
        pass
    return view
