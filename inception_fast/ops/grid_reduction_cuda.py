"""The `cuda` backend of grid_reduction (ops/grid_reduction.py) as registered ops (ops/library.py):
the only callers of the CUDA C++ kernels (the set `kernels()` returns: inception_fast._C, or the
torch stand-in ops/csrc_reference.py in tests).

    inception_fast::grid_reduction_cuda_train_fwd   writes out, running_mean, running_var
    inception_fast::grid_reduction_cuda_eval_fwd    writes out
        (x, weight, bn_weight, bn_bias, running_mean, running_var, out, conv_offset,
         pool_offset, eps, momentum, training, save) -> (y, mean, invstd, scale, shift, argmax)
    inception_fast::grid_reduction_cuda_bwd
        (grad, x, weight, y, mean, invstd, scale, shift, argmax, conv_offset, pool_offset,
         training, needs) -> (grad_x, grad_w, grad_gamma, grad_beta, grad_out)

grid_reduction_cuda_fwd picks the train or eval registration (one implementation: eval must not
declare the running statistics mutated, or every eval call would bump their versions).
pool_offset < 0: no pool branch; weight None: no conv branch. What computes what is in
ops/grid_reduction.py's module doc.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .bn_math import eval_affine, f32_vec
from .conv_bn_relu_cuda import (bn_forward, bn_relu_backward, check_out_not_input, grad_slice,
                                kernels, packed_weight, passthrough_grad, weight_as)
from .csrc_reference import check_slices_disjoint
from .library import absent, absents, name, train_and_eval_ops
from ..kernels.sizes import pool3x3s2_out_hw as _out_hw

CL = torch.channels_last



def _slices(x, weight, conv_offset, pool_offset):
    """(offset, channels) of every slice of `out` the op writes."""
    s = [(conv_offset, weight.shape[0])] if weight is not None else []
    return s + ([(pool_offset, x.shape[1])] if pool_offset >= 0 else [])


def _weight_format(weight):
    """The layout grad_w is returned in: the weight's own (channels_last or contiguous)."""
    if weight.is_contiguous(memory_format=CL) and not weight.is_contiguous():
        return CL
    return torch.contiguous_format



# ---- forward ----------------------------------------------------------------------------

def _forward(
        x: Tensor, weight: Optional[Tensor], bn_weight: Optional[Tensor],
        bn_bias: Optional[Tensor], running_mean: Optional[Tensor],
        running_var: Optional[Tensor], out: Tensor, conv_offset: int, pool_offset: int,
        eps: float, momentum: float, training: bool, save: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Writes the conv slice (weight given) and the pool slice (pool_offset >= 0) of `out`;
    training: updates the running statistics. Returns what backward needs when `save` (the
    pre-BN conv output y, fp32 BN vectors mean / invstd / scale / shift, the pool argmax),
    else all absent; also absent: those of a branch that is not there."""
    kern = kernels()
    check_out_not_input(out, x, "grid_reduction")
    if weight is not None and pool_offset >= 0:
        check_slices_disjoint("grid_reduction(backend='cuda')", *_slices(x, weight, conv_offset,
                                                                         pool_offset))
    xc = x.contiguous(memory_format=CL)
    N, C, H, W = xc.shape
    OH, OW = _out_hw(H, W)
    direct = out.is_contiguous(memory_format=CL)
    target = out if direct else torch.empty_like(out, memory_format=CL)
    has_conv, has_pool = weight is not None, pool_offset >= 0
    argmax = (torch.empty((N, C, OH, OW), dtype=torch.uint8, device=x.device,
                          memory_format=CL) if has_pool else None)
    pool_args = (target, pool_offset, argmax) if has_pool else (None, 0, None)
    fused = has_conv and has_pool and x.dtype in (torch.float16, torch.bfloat16)
    y = vecs = None
    if has_conv:
        g32, b32 = f32_vec(bn_weight), f32_vec(bn_bias)
        w = weight.detach()
        Co = w.shape[0]
        if fused and not training and not save:
            # Eval, nothing to differentiate: conv + BN + ReLU + pool in one kernel.
            _, _, scale, shift = eval_affine(g32, b32, running_mean, running_var, eps)
            kern.grid_reduce(xc, w, target, conv_offset, *pool_args, None, None, scale, shift,
                             packed=packed_weight(weight, x.dtype))
        else:
            stats = None
            if fused:
                y = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device,
                                memory_format=CL)
                if training:
                    stats = (torch.zeros(Co, dtype=torch.float64, device=x.device),
                             torch.zeros(Co, dtype=torch.float64, device=x.device))
                kern.grid_reduce(xc, w, y, 0, *pool_args, *(stats or (None, None)),
                                 packed=packed_weight(weight, x.dtype))
            else:  # cuDNN conv; the pool (if any) runs alone below
                y = F.conv2d(xc, weight_as(weight, x.dtype), None, 2, 0).contiguous(
                    memory_format=CL)
            if training:
                vecs = bn_forward(kern, y, stats, g32, b32, running_mean, running_var,
                                  training=True, eps=eps, momentum=momentum)
                vecs = tuple(v.clone() for v in vecs)  # rows of one tensor: no aliased returns
            else:  # fresh tensors (conv_bn_relu_cuda's eval copy may view the running buffers)
                vecs = eval_affine(g32, b32, running_mean, running_var, eps)
            kern.bn_apply_relu(y, vecs[2], vecs[3], target, conv_offset)
    if has_pool and not fused:
        kern.grid_reduce(xc, None, None, 0, *pool_args)
    if not direct:
        for off, c in _slices(x, weight, conv_offset, pool_offset):
            out[:, off:off + c].copy_(target[:, off:off + c])
    if not save:
        return absents(x, 5) + (absent(x, torch.uint8),)
    y = absent(x) if y is None else y
    vecs = absents(x, 4) if vecs is None else vecs
    return (y, *vecs, absent(x, torch.uint8) if argmax is None else argmax)


grid_reduction_cuda_train_fwd, grid_reduction_cuda_eval_fwd = train_and_eval_ops(
    "grid_reduction_cuda", _forward)


def grid_reduction_cuda_fwd(x, weight, bn_weight, bn_bias, running_mean, running_var, out,
                            conv_offset, pool_offset, eps, momentum, training, save):
    op = grid_reduction_cuda_train_fwd if training else grid_reduction_cuda_eval_fwd
    return op(x, weight, bn_weight, bn_bias, running_mean, running_var, out, conv_offset,
              pool_offset, eps, momentum, training, save)


@grid_reduction_cuda_train_fwd.register_fake
@grid_reduction_cuda_eval_fwd.register_fake
def _(x, weight, bn_weight, bn_bias, running_mean, running_var, out, conv_offset, pool_offset,
      eps, momentum, training, save):
    if not save:
        return absents(x, 5) + (absent(x, torch.uint8),)
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W)
    if weight is not None:
        Co = weight.shape[0]
        y = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device, memory_format=CL)
        vecs = tuple(torch.empty((Co,), dtype=torch.float32, device=x.device) for _ in range(4))
    else:
        y, vecs = absent(x), absents(x, 4)
    argmax = (torch.empty((N, C, OH, OW), dtype=torch.uint8, device=x.device, memory_format=CL)
              if pool_offset >= 0 else absent(x, torch.uint8))
    return (y, *vecs, argmax)


# ---- backward ---------------------------------------------------------------------------

@torch.library.custom_op(name("grid_reduction_cuda_bwd"), mutates_args=())
def grid_reduction_cuda_bwd(
        grad: Tensor, x: Tensor, weight: Optional[Tensor], y: Tensor, mean: Tensor,
        invstd: Tensor, scale: Tensor, shift: Tensor, argmax: Tensor, conv_offset: int,
        pool_offset: int, training: bool, needs: list[bool]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_w, grad_gamma, grad_beta, grad_out) from `grad`, the gradient of the whole
    `out`: grad_x channels_last, grad_w in the weight's layout, grad_gamma / grad_beta fp64
    per-channel sums, grad_out the gradient of `out`'s old contents (`grad` with the written
    slices zeroed). needs: which of the five to compute (the others are absent)."""
    kern = kernels()
    need_x, need_w, need_g, need_b, need_out = needs
    xc = x.contiguous(memory_format=CL) if need_x or need_w else x
    dx = dw = dgamma = dbeta = dout = None
    if weight is not None and (need_x or need_w or need_g or need_b):
        dy, sum_g, sum_gx = bn_relu_backward(kern, grad, conv_offset, y, mean, invstd, scale,
                                             shift, training)
        if need_x or need_w:
            dx, dw, _ = torch.ops.aten.convolution_backward(
                dy, xc, weight_as(weight, x.dtype), None, [2, 2], [0, 0], [1, 1], False, [0, 0],
                1, [need_x, need_w, False])
        dgamma = sum_gx if need_g else None
        dbeta = sum_g if need_b else None
    if need_x and pool_offset >= 0:
        g, goff = grad_slice(grad, pool_offset, xc.shape[1])
        if dx is None:
            dx = torch.empty(xc.shape, dtype=x.dtype, device=x.device, memory_format=CL)
            kern.maxpool_bwd(g, goff, argmax, dx, False)
        else:
            dx = dx.contiguous(memory_format=CL)
            kern.maxpool_bwd(g, goff, argmax, dx, True)
    if dx is not None:
        dx = dx.contiguous(memory_format=CL)
    if dw is not None:  # in the weight's own dtype (fp32 master weights) and layout
        dw = dw.to(weight.dtype).contiguous(memory_format=_weight_format(weight))
    if need_out:
        dout = passthrough_grad(grad, _slices(x, weight, conv_offset, pool_offset))
    return tuple(absent(grad) if t is None else t for t in (dx, dw, dgamma, dbeta, dout))


@grid_reduction_cuda_bwd.register_fake
def _(grad, x, weight, y, mean, invstd, scale, shift, argmax, conv_offset, pool_offset,
      training, needs):
    need_x, need_w, need_g, need_b, need_out = needs
    has_conv = weight is not None
    vec = lambda: torch.empty((weight.shape[0],), dtype=torch.float64,  # noqa: E731
                              device=grad.device)
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=CL)
            if need_x and (has_conv or pool_offset >= 0) else absent(grad),
            torch.empty(weight.shape, dtype=weight.dtype, device=weight.device,
                        memory_format=_weight_format(weight)) if need_w and has_conv
            else absent(grad),
            vec() if need_g and has_conv else absent(grad),
            vec() if need_b and has_conv else absent(grad),
            torch.empty_like(grad) if need_out else absent(grad))
