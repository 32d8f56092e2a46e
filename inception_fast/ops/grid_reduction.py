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

Backend "cuda": for fp16 / bf16 with both branches, one kernel (csrc/grid_reduction.cu) reads
each 3x3/2 window once for both the conv (tensor cores; BN statistics in its epilogue) and the
max-pool, then bn_apply_relu writes the conv slice (in eval with no gradient needed, BN + ReLU are
folded into the conv kernel's epilogue: one kernel for the whole op). fp32, or a lone conv
branch: cuDNN conv + the BN kernels (conv_bn_relu_cuda's path); a lone pool: the pool kernel.
Backward: the BN+ReLU backward kernels, cuDNN for the conv's gradients, and the max-pool
backward kernel routing each gradient to the window's argmax, added into the input gradient.

Backend "triton": the same single pass over the windows in any dtype (conv_bn_relu_triton with
pool_offset: kernels/conv3x3s2_pool.py), everything else Triton too.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .. import backends
from .checks import FLOAT_DTYPES
from .conv_bn_relu import conv_bn_relu_reference

CL = torch.channels_last


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
    @staticmethod
    def forward(ctx, x, weight, gamma, beta, out, running_mean, running_var, cfg):
        from .conv_bn_relu_cuda import _f32, bn_forward, eval_affine

        kern = cfg.kern
        xc = x.contiguous(memory_format=CL)
        N, C, H, W = xc.shape
        OH, OW = (H - 3) // 2 + 1, (W - 3) // 2 + 1
        direct = out.is_contiguous(memory_format=CL)
        target = out if direct else torch.empty_like(out, memory_format=CL)
        has_conv, has_pool = weight is not None, cfg.pool_offset is not None
        Co = weight.shape[0] if has_conv else 0
        argmax = (torch.empty((N, C, OH, OW), dtype=torch.uint8, device=x.device,
                              memory_format=CL) if has_pool else None)
        pool_args = (target, cfg.pool_offset, argmax) if has_pool else (None, 0, None)
        y = mean = invstd = scale = shift = None
        fused = has_conv and has_pool and x.dtype in (torch.float16, torch.bfloat16)
        need_grad = any(ctx.needs_input_grad[:4])
        if has_conv:
            g32, b32 = _f32(gamma), _f32(beta)
            w = weight.detach()
            if fused and not cfg.training and not need_grad:
                # Eval, nothing to differentiate: conv + BN + ReLU + pool in one kernel.
                mean, invstd, scale, shift = eval_affine(g32, b32, running_mean, running_var,
                                                         cfg.eps)
                kern.grid_reduce(xc, w, target, cfg.conv_offset, *pool_args, None, None, scale,
                                 shift)
            else:
                stats = None
                if fused:
                    y = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device,
                                    memory_format=CL)
                    if cfg.training:
                        stats = (torch.zeros(Co, dtype=torch.float64, device=x.device),
                                 torch.zeros(Co, dtype=torch.float64, device=x.device))
                    kern.grid_reduce(xc, w, y, 0, *pool_args, *(stats or (None, None)))
                else:  # cuDNN conv; the pool (if any) runs alone below
                    y = F.conv2d(xc, w, None, 2, 0).contiguous(memory_format=CL)
                mean, invstd, scale, shift = bn_forward(kern, y, stats, g32, b32, running_mean,
                                                        running_var, training=cfg.training,
                                                        eps=cfg.eps, momentum=cfg.momentum)
                kern.bn_apply_relu(y, scale, shift, target, cfg.conv_offset)
        if has_pool and not fused:
            kern.grid_reduce(xc, None, None, 0, *pool_args)
        if not direct:
            for off, c in cfg.slices:
                out[:, off:off + c].copy_(target[:, off:off + c])
        ctx.save_for_backward(xc, weight, y, mean, invstd, scale, shift, argmax)
        ctx.cfg = cfg
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        from .conv_bn_relu_cuda import bn_relu_backward, grad_slice

        xc, weight, y, mean, invstd, scale, shift, argmax = ctx.saved_tensors
        cfg, kern = ctx.cfg, ctx.cfg.kern
        need_x, need_w, need_g, need_b, need_out = ctx.needs_input_grad[:5]
        dx = dw = dgamma = dbeta = None
        if weight is not None:
            dy, sum_g, sum_gx = bn_relu_backward(kern, grad, cfg.conv_offset, y, mean, invstd,
                                                 scale, shift, cfg.training)
            if need_x or need_w:
                dx, dw, _ = torch.ops.aten.convolution_backward(
                    dy, xc, weight, None, [2, 2], [0, 0], [1, 1], False, [0, 0], 1,
                    [need_x, need_w, False])
            dgamma = sum_gx.to(cfg.gamma_dtype) if need_g else None
            dbeta = sum_g.to(cfg.beta_dtype) if need_b else None
        if need_x and argmax is not None:
            g, goff = grad_slice(grad, cfg.pool_offset, xc.shape[1])
            if dx is None:
                dx = torch.empty_like(xc, memory_format=CL)
                kern.maxpool_bwd(g, goff, argmax, dx, False)
            else:
                dx = dx.contiguous(memory_format=CL)
                kern.maxpool_bwd(g, goff, argmax, dx, True)
        dout = None
        if need_out:
            from .conv_bn_relu_cuda import passthrough_grad

            dout = passthrough_grad(grad, cfg.slices)
        return dx, dw, dgamma, dbeta, dout, None, None, None


def grid_reduction_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var, *, out,
                        conv_offset=0, pool_offset=None, eps=1e-3, momentum=0.1, training=False):
    """The `cuda` backend of grid_reduction (inputs already checked); returns `out`."""
    from .conv_bn_relu_cuda import check_kernel_dtype, kernels

    check_kernel_dtype(x, "grid_reduction")
    if weight is not None and weight.dtype != x.dtype:
        raise TypeError(f"grid_reduction: weight dtype {weight.dtype} differs from the input "
                        f"dtype {x.dtype}")
    slices = []
    if weight is not None:
        slices.append((conv_offset, weight.shape[0]))
    if pool_offset is not None:
        slices.append((pool_offset, x.shape[1]))
    cfg = SimpleNamespace(kern=kernels(), conv_offset=conv_offset, pool_offset=pool_offset, eps=eps,
                          momentum=momentum, training=training, slices=slices,
                          gamma_dtype=bn_weight.dtype if bn_weight is not None else None,
                          beta_dtype=bn_bias.dtype if bn_bias is not None else None)
    return _GridReductionCuda.apply(x, weight, bn_weight, bn_bias, out, running_mean, running_var,
                                    cfg)
