"""Grid reduction (Inception-v3 Mixed_6a / Mixed_7a) as one op writing channel slices of the
block output, and its pure-torch reference.

    grid_reduction(x, weight, bn_weight, bn_bias, running_mean, running_var, *, out,
                   conv_offset=0, pool_offset=None, eps=1e-3, momentum=0.1, training=False,
                   backend="torch") -> out

- conv branch (when `weight` is given): relu(batch_norm(conv2d(x, weight, stride 2, no padding)))
  into out[:, conv_offset:conv_offset + C_out], BN exactly as conv_bn_relu (training: batch
  statistics, running buffers updated in place with factor `momentum`; eval: running statistics);
- pool branch (when `pool_offset` is given): max_pool2d(x, 3, stride 2) into
  out[:, pool_offset:pool_offset + C_in].
`out` is the (N, C_total, OH, OW) block output, OH = (H - 3) // 2 + 1; the other branches write
the remaining channels. Together this equals torch.cat of the branches (the reference below).
Mixed_6a: `grid_reduction(x, branch3x3 params, out=out, conv_offset=0, pool_offset=480)`.
Mixed_7a: its convs read intermediate tensors, so `grid_reduction(x, None, ..., out=out,
pool_offset=512)` writes the pool slice and the stride-2 convs use conv_bn_relu(out=...).

Backend "cuda": for fp16 / bf16 with both branches, one kernel (csrc/grid_reduce.cu) reads
each 3x3/2 window once for both the conv (tensor cores; BN statistics in its epilogue) and the
max-pool, then bn_apply_relu writes the conv slice (in eval with no gradient needed, BN + ReLU are
folded into the conv kernel's epilogue: one kernel for the whole op). fp32, or a lone conv
branch: cuDNN conv + the BN kernels (conv_bn_relu_cuda's path); a lone pool: the pool kernel.
Backward: the BN+ReLU backward kernels, cuDNN for the conv's gradients, and the max-pool
backward kernel routing each gradient to the window's argmax, added into the input gradient.
The kernel calls are the registered ops of ops/grid_reduction_cuda.py (ops/library.py's
pattern); _GridReductionCuda below is their autograd, so torch.compile(fullgraph=True) traces
this path with no graph break.

Backend "triton": the same single pass over the windows in any dtype (conv_bn_relu_triton with
pool_offset: kernels/conv3x3s2_pool.py), everything else Triton too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import backends
from .checks import FLOAT_DTYPES
from .conv_bn_relu import conv_bn_relu_reference
from .conv_bn_relu_cuda import check_kernel_dtype, check_weight_dtype
from .grid_reduction_cuda import grid_reduction_cuda_bwd, grid_reduction_cuda_fwd
from .library import present


def grid_reduction_reference(x, weight, bn_weight, bn_bias, running_mean, running_var, *, out,
                             conv_offset=0, pool_offset=None, eps=1e-3, momentum=0.1,
                             training=False):
    """The oracle: conv_bn_relu_reference and F.max_pool2d copied into their slices of `out`."""
    if weight is not None:
        conv_bn_relu_reference(x, weight, bn_weight, bn_bias, running_mean, running_var,
                               stride=(2, 2), padding=(0, 0), eps=eps, momentum=momentum,
                               training=training, out=out, out_offset=conv_offset)
    if pool_offset is not None:
        out[:, pool_offset:pool_offset + x.shape[1]].copy_(F.max_pool2d(x, 3, 2))
    return out


def check_grid_reduction(x, weight, out, conv_offset, pool_offset):
    what = "grid_reduction"
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{what}: input must be a 4-D tensor (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what}: input dtype must be floating point, got {x.dtype}")
    N, C, H, W = x.shape
    if H < 3 or W < 3:
        raise ValueError(f"{what}: input must be at least 3x3 for a 3x3/2 window, got {H}x{W}")
    if weight is None and pool_offset is None:
        raise ValueError(f"{what}: nothing to compute (give a conv weight, a pool_offset, or both)")
    if out is None or not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise ValueError(f"{what}: out must be the 4-D block output tensor")
    OH, OW = (H - 3) // 2 + 1, (W - 3) // 2 + 1
    if out.shape[0] != N or tuple(out.shape[2:]) != (OH, OW):
        raise ValueError(f"{what}: out has shape {tuple(out.shape)}, "
                         f"expected ({N}, C_total, {OH}, {OW})")
    if out.dtype != x.dtype or out.device != x.device:
        raise TypeError(f"{what}: out is {out.dtype} on {out.device}, "
                        f"the input {x.dtype} on {x.device}")
    slices = []
    if weight is not None:
        if weight.dim() != 4 or tuple(weight.shape[1:]) != (C, 3, 3):
            raise ValueError(f"{what}: weight must be (C_out, {C}, 3, 3), "
                             f"got {tuple(weight.shape)}")
        if weight.device != x.device:
            raise ValueError(f"{what}: weight is on {weight.device}, the input on {x.device}")
        slices.append(("conv", conv_offset, weight.shape[0]))
    if pool_offset is not None:
        slices.append(("pool", pool_offset, C))
    for name, off, c in slices:
        if off < 0 or off + c > out.shape[1]:
            raise ValueError(f"{what}: {name} slice [{off}, {off + c}) does not fit in out with "
                             f"{out.shape[1]} channels")
    if len(slices) == 2:
        (_, a, ca), (_, b, cb) = slices
        if a < b + cb and b < a + ca:
            raise ValueError(f"{what}: conv slice [{a}, {a + ca}) and pool slice "
                             f"[{b}, {b + cb}) overlap")


def grid_reduction(x, weight, bn_weight, bn_bias, running_mean, running_var, *, out,
                   conv_offset=0, pool_offset=None, eps=1e-3, momentum=0.1, training=False,
                   backend="torch"):
    """Checked entry point (see the module doc); returns `out`."""
    check_grid_reduction(x, weight, out, conv_offset, pool_offset)
    kwargs = dict(out=out, conv_offset=conv_offset, pool_offset=pool_offset, eps=eps,
                  momentum=momentum, training=training)
    b = backends.resolve(backend, x)
    if b == "cuda":
        return grid_reduction_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                   **kwargs)
    if b == "triton":
        return grid_reduction_triton(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                     **kwargs)
    return grid_reduction_reference(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                    **kwargs)


def grid_reduction_triton(x, weight, bn_weight, bn_bias, running_mean, running_var, *, out,
                          conv_offset=0, pool_offset=None, eps=1e-3, momentum=0.1,
                          training=False):
    """Backend "triton": with both branches, the conv+BN+ReLU op whose conv kernel also writes
    the max-pool of the same windows (kernels/conv3x3s2_pool.py, any float dtype); a lone branch
    uses the plain conv op or the max-pool kernel."""
    from .conv_bn_relu_triton import conv_bn_relu_triton
    from .max_pool_slice import max_pool3x3s2_into

    if weight is None:
        max_pool3x3s2_into(x, out, pool_offset, backend="triton")
        return out
    conv_bn_relu_triton(x, weight, bn_weight, bn_bias, running_mean, running_var,
                        stride=(2, 2), padding=(0, 0), eps=eps, momentum=momentum,
                        training=training, out=out, out_offset=conv_offset,
                        pool_offset=pool_offset)
    return out


class _GridReductionCuda(torch.autograd.Function):
    """The cuda path's autograd: the registered ops of ops/grid_reduction_cuda.py each way.
    Differentiable w.r.t. x, the conv weight, BN weight and bias, and `out` (whose written
    slices get zero gradient). Traced whole by torch.compile."""

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, out, running_mean, running_var, conv_offset,
                pool_offset, eps, momentum, training):
        save = any(ctx.needs_input_grad[:4])
        y, mean, invstd, scale, shift, argmax = grid_reduction_cuda_fwd(
            x, weight, gamma, beta, running_mean, running_var, out, conv_offset, pool_offset,
            eps, momentum, training, save)
        ctx.save_for_backward(x, weight, y, mean, invstd, scale, shift, argmax)
        ctx.args = (conv_offset, pool_offset, training)
        ctx.dtypes = (None if gamma is None else gamma.dtype, None if beta is None else beta.dtype)
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, y, mean, invstd, scale, shift, argmax = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:5])
        dx, dw, dgamma, dbeta, dout = grid_reduction_cuda_bwd(
            grad, x, weight, y, mean, invstd, scale, shift, argmax, *ctx.args, needs)
        g_dtype, b_dtype = ctx.dtypes
        return (present(dx), present(dw), dgamma.to(g_dtype) if needs[2] else None,
                dbeta.to(b_dtype) if needs[3] else None, present(dout)) + (None,) * 7


def grid_reduction_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var, *, out,
                        conv_offset=0, pool_offset=None, eps=1e-3, momentum=0.1, training=False):
    """The `cuda` backend of grid_reduction (inputs already checked); returns `out`."""
    check_kernel_dtype(x, "grid_reduction")
    check_weight_dtype(weight, x, "grid_reduction")  # fp32 master weights are cast inside
    args = (conv_offset, -1 if pool_offset is None else pool_offset, float(eps),
            float(momentum), bool(training))
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bn_weight, bn_bias, out)):
        return _GridReductionCuda.apply(x, weight, bn_weight, bn_bias, out, running_mean,
                                        running_var, *args)
    grid_reduction_cuda_fwd(x, weight, bn_weight, bn_bias, running_mean, running_var, out,
                            *args, False)  # bumps the versions of what it wrote itself
    return out
