"""max_pool2d(x, 3, stride=2) written into a channel slice of a block output (the pool branch
of the grid reductions Mixed_6a / Mixed_7a), and its pure-torch reference.

    max_pool3x3s2_into(x, out, offset, backend) -> out[:, offset:offset + C] (a view)

Triton backend: kernels/max_pool3x3s2.py (argmax kept as uint8, backward a gather), behind the
registered ops (ops/library.py)
    inception_fast::max_pool3x3s2_triton_fwd(x, out, offset) -> argmax     (writes `out`)
    inception_fast::max_pool3x3s2_triton_bwd(grad, argmax, ...) -> (grad_x, grad_out)
so torch.compile sees one opaque node each way. Used when the CUDA grid-reduction op
(inception_fast/ops/grid_reduction.py) is not the chosen backend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import backends
from .library import absent, absents, name, present
from ..kernels.sizes import pool3x3s2_out_hw as _out_hw

CL = torch.channels_last


def _check(x, out, offset):
    what = "max_pool3x3s2_into"
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{what}: input must be a 4-D (N, C, H, W) tensor")
    n, c, h, w = x.shape
    if h < 3 or w < 3:
        raise ValueError(f"{what}: input must be at least 3x3, got {h}x{w}")
    oh, ow = _out_hw(h, w)
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


# ---- registered ops: the only callers of the kernels ---------------------------------------

@torch.library.custom_op(name("max_pool3x3s2_triton_fwd"), mutates_args=("out",))
def max_pool3x3s2_triton_fwd(x: Tensor, out: Tensor, offset: int) -> Tensor:
    """max_pool2d(x, 3, 2) into out[:, offset:offset + C]; returns the argmax (the winning tap
    0..8 per output element, dense uint8 channels_last (N, C, OH, OW))."""
    from ..kernels.max_pool3x3s2 import max_pool3x3s2_fwd

    _, idx = max_pool3x3s2_fwd(x, out=out[:, offset:offset + x.shape[1]])
    return idx


@max_pool3x3s2_triton_fwd.register_fake
def _(x, out, offset):
    n, c, h, w = x.shape
    return torch.empty((n, c) + _out_hw(h, w), dtype=torch.uint8, device=x.device,
                       memory_format=CL)


@torch.library.custom_op(name("max_pool3x3s2_triton_bwd"), mutates_args=())
def max_pool3x3s2_triton_bwd(grad: Tensor, argmax: Tensor, offset: int, input_hw: list[int],
                             need_x: bool, need_out: bool) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_out) from `grad`, the gradient of the whole `out`: grad_x (channels_last
    (N, C, H, W)) routes each window's gradient to its argmax; grad_out is the gradient of
    `out`'s old contents (`grad` with the pool slice zeroed). Each is absent unless asked for."""
    from ..kernels.max_pool3x3s2 import max_pool3x3s2_bwd

    c = argmax.shape[1]
    grad_x, grad_out = absents(grad, 2)  # two outputs may not be one tensor
    if need_x:
        grad_x = max_pool3x3s2_bwd(grad[:, offset:offset + c], argmax, tuple(input_hw))
    if need_out:  # the blocks pass a fresh `out`: this copy never runs there
        grad_out = grad.clone()
        grad_out[:, offset:offset + c].zero_()
    return grad_x, grad_out


@max_pool3x3s2_triton_bwd.register_fake
def _(grad, argmax, offset, input_hw, need_x, need_out):
    n, c = argmax.shape[:2]
    grad_x = (torch.empty((n, c, *input_hw), dtype=grad.dtype, device=grad.device,
                          memory_format=CL) if need_x else absent(grad))
    return grad_x, torch.empty_like(grad) if need_out else absent(grad)


# ---- autograd -------------------------------------------------------------------------------

class _MaxPoolIntoFn(torch.autograd.Function):
    """Differentiable w.r.t. x and `out` (whose pool slice is overwritten: zero gradient
    there). Traced whole by torch.compile."""

    @staticmethod
    def forward(ctx, x, out, offset):
        idx = max_pool3x3s2_triton_fwd(x, out, offset)
        ctx.save_for_backward(idx)
        ctx.cfg = (offset, [x.shape[2], x.shape[3]])
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        offset, hw = ctx.cfg
        need_x, need_out = ctx.needs_input_grad[:2]
        dx, dout = max_pool3x3s2_triton_bwd(grad, idx, offset, hw, need_x, need_out)
        return present(dx), present(dout), None


def max_pool3x3s2_into(x, out, offset, *, backend="torch"):
    """max_pool2d(x, 3, 2) into out[:, offset:offset + C]; returns that view."""
    _check(x, out, offset)
    b = backends.resolve(backend, x)
    if b == "cuda":
        b = "triton" if backends.why_unavailable("triton") is None else "torch"
    if b == "torch":
        return max_pool3x3s2_reference(x, out, offset)
    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        out = _MaxPoolIntoFn.apply(x, out, offset)
    else:
        max_pool3x3s2_triton_fwd(x, out, offset)  # bumps out's version itself
    return out[:, offset:offset + x.shape[1]]
