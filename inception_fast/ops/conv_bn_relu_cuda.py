"""conv2d -> BatchNorm2d -> ReLU on the `cuda` backend (the CUDA C++ kernels of inception_fast._C).

Same semantics as conv_bn_relu_reference (see conv_bn_relu.py). What computes what:
- the conv itself: the extension's asymmetric direct conv (csrc/asym_conv.cu, tensor cores for
  fp16/bf16, CUDA cores for fp32) when the filter is 1xn or nx1 with stride 1 and padding along
  the tap axis only (Inception's 1x7, 7x1, 1x3, 3x1) and the padded line fits its tile;
  **cuDNN** (through torch.nn.functional.conv2d) for every other filter;
- BN statistics: fused into the asymmetric conv's epilogue, else the standalone bn_stats kernel;
  mean / variance / folded scale and shift: bn_finalize; running statistics: updated in place
  as torch does (unbiased variance, factor `momentum`);
- normalize + gamma/beta + ReLU: bn_apply_relu, written straight into the channel slice of `out`
  (eval with no gradient needed and an asymmetric filter: folded into the conv epilogue, one
  kernel in all);
- backward: the fused ReLU-mask + BN backward kernels (two per-channel reductions, then the
  gradient of the conv output), then **cuDNN** for the conv's input and weight gradients
  (aten.convolution_backward).

Activations are processed channels_last (NHWC); other layouts are converted first. `out`, when
given, receives the result in out[:, out_offset:out_offset + C_out] (copy-free concat when `out`
is channels_last, else through a temporary); autograd sees `out` modified in place, and the
gradient reaching the rest of `out` passes through unchanged (this op's slice gets zero).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..backends import BackendUnavailableError
from .checks import conv_out_size

CL = torch.channels_last
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Tests point this at inception_fast.ops.csrc_reference to run the Functions on CPU tensors.
kernels_override = None


def kernels():
    """The kernel set: the built extension (inception_fast._C), or the test override."""
    if kernels_override is not None:
        return kernels_override
    from .. import ext

    try:
        return ext.load()
    except RuntimeError as e:
        raise BackendUnavailableError(f"backend 'cuda' is not available: {e}") from e


def check_kernel_dtype(x: torch.Tensor, what: str) -> None:
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{what}: backend 'cuda' supports float32, float16 and bfloat16 inputs, "
                        f"got {x.dtype} (use backend='torch' for it)")


def asym_taps(weight_shape, stride, padding):
    """(taps, pad) when the conv is one the asymmetric kernel handles, else None."""
    _, _, kh, kw = weight_shape
    if tuple(stride) != (1, 1) or (kh == 1) == (kw == 1):
        return None
    if kh == 1 and padding[0] == 0:
        return kw, padding[1]
    if kw == 1 and padding[1] == 0:
        return kh, padding[0]
    return None


def use_asym_conv(kern, x_shape, weight_shape, stride, padding) -> bool:
    t = asym_taps(weight_shape, stride, padding)
    if t is None:
        return False
    taps, pad = t
    line = x_shape[2] if weight_shape[3] == 1 else x_shape[3]
    return taps <= kern.asym_conv_max_taps() and line + 2 * pad <= kern.asym_conv_max_padded_line()


def _f32(t):
    return None if t is None else t.detach().float().contiguous()


def bn_forward(kern, y, stats, gamma, beta, running_mean, running_var, *, training, eps, momentum):
    """BN parameters for the apply kernel. Training: finalize the batch statistics `stats` (fp64
    sum, sumsq; computed here from y when None) and update the running buffers; eval: fold the
    running statistics. Returns fp32 (mean, invstd, scale, shift)."""
    C = y.shape[1]
    count = y.numel() // max(C, 1)
    if training:
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {tuple(y.shape)}")
        if stats is None:
            stats = (torch.zeros(C, dtype=torch.float64, device=y.device),
                     torch.zeros(C, dtype=torch.float64, device=y.device))
            kern.bn_stats(y, *stats)
        mean, var, invstd, scale, shift = kern.bn_finalize(stats[0], stats[1], count, eps,
                                                           gamma, beta).unbind(0)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            if running_var is not None:
                unbiased = var.double() * (count / (count - 1))
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        return mean.contiguous(), invstd.contiguous(), scale.contiguous(), shift.contiguous()
    return eval_affine(gamma, beta, running_mean, running_var, eps)


def eval_affine(gamma, beta, running_mean, running_var, eps):
    """fp32 (mean, invstd, scale, shift) of BN with the running statistics."""
    if running_mean is None or running_var is None:
        raise ValueError("conv_bn_relu: eval mode (training=False) needs running_mean and "
                         "running_var")
    mean = running_mean.detach().float()
    invstd = torch.rsqrt(running_var.detach().float() + eps)
    scale = invstd * gamma if gamma is not None else invstd.clone()
    shift = (beta if beta is not None else torch.zeros_like(mean)) - mean * scale
    return mean.contiguous(), invstd.contiguous(), scale.contiguous(), shift.contiguous()


def grad_slice(grad, offset, C):
    """(tensor, offset) the kernels can read grad[:, offset:offset + C] from (channels_last)."""
    if grad.is_contiguous(memory_format=CL):
        return grad, offset
    return grad[:, offset:offset + C].contiguous(memory_format=CL), 0


def bn_relu_backward(kern, grad, offset, y, mean, invstd, scale, shift, training):
    """Gradient of relu(y * scale + shift) (BN with batch statistics when training) w.r.t. y,
    and the per-channel sums that are d gamma (sum g*xhat) and d beta (sum g), fp64."""
    C = y.shape[1]
    g, goff = grad_slice(grad, offset, C)
    sum_g = torch.zeros(C, dtype=torch.float64, device=y.device)
    sum_gx = torch.zeros_like(sum_g)
    kern.bn_relu_bwd_reduce(g, goff, y, scale, shift, mean, invstd, sum_g, sum_gx)
    count = y.numel() // max(C, 1)
    dy = kern.bn_relu_bwd_apply(g, goff, y, scale, shift, mean, invstd, sum_g, sum_gx, count,
                                training)
    return dy, sum_g, sum_gx


def passthrough_grad(grad, slices):
    """Gradient w.r.t. the previous content of `out`: grad with the overwritten slices zeroed."""
    g = grad.clone()
    for off, c in slices:
        g[:, off:off + c] = 0
    return g


class _ConvBNReLUCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, gamma, beta, out, running_mean, running_var, cfg):
        kern = cfg.kern
        xc = x.contiguous(memory_format=CL)
        N, _, H, W = xc.shape
        Co = weight.shape[0]
        OH = conv_out_size(H, weight.shape[2], cfg.stride[0], cfg.padding[0])
        OW = conv_out_size(W, weight.shape[3], cfg.stride[1], cfg.padding[1])
        g32, b32 = _f32(gamma), _f32(beta)
        asym = use_asym_conv(kern, xc.shape, weight.shape, cfg.stride, cfg.padding)
        pad = asym_taps(weight.shape, cfg.stride, cfg.padding)[1] if asym else 0
        direct = out is not None and out.is_contiguous(memory_format=CL)
        if direct:
            target, off = out, cfg.out_offset
        else:
            target, off = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device,
                                      memory_format=CL), 0
        need_grad = any(ctx.needs_input_grad[:4])

        if not cfg.training and asym and not need_grad:
            # Eval, nothing to differentiate: conv + folded BN + ReLU in one kernel.
            mean, invstd, scale, shift = eval_affine(g32, b32, running_mean, running_var, cfg.eps)
            kern.asym_conv(xc, weight.detach(), pad, target, off, None, None, scale, shift)
            y = None
        else:
            stats = None
            if asym:
                y = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device, memory_format=CL)
                if cfg.training:
                    stats = (torch.zeros(Co, dtype=torch.float64, device=x.device),
                             torch.zeros(Co, dtype=torch.float64, device=x.device))
                    kern.asym_conv(xc, weight.detach(), pad, y, 0, *stats)
                else:
                    kern.asym_conv(xc, weight.detach(), pad, y, 0)
            else:  # cuDNN
                y = F.conv2d(xc, weight.detach(), None, cfg.stride, cfg.padding)
                y = y.contiguous(memory_format=CL)
            mean, invstd, scale, shift = bn_forward(kern, y, stats, g32, b32, running_mean,
                                                    running_var, training=cfg.training, eps=cfg.eps,
                                                    momentum=cfg.momentum)
            kern.bn_apply_relu(y, scale, shift, target, off)

        if out is not None and not direct:
            out[:, cfg.out_offset:cfg.out_offset + Co].copy_(target)
        ctx.save_for_backward(xc, weight, y, mean, invstd, scale, shift)
        ctx.cfg = cfg
        if out is None:
            return target
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        xc, weight, y, mean, invstd, scale, shift = ctx.saved_tensors
        cfg = ctx.cfg
        Co = weight.shape[0]
        off = cfg.out_offset if cfg.has_out else 0
        dy, sum_g, sum_gx = bn_relu_backward(cfg.kern, grad, off, y, mean, invstd, scale, shift,
                                             cfg.training)
        need_x, need_w, need_g, need_b, need_out = ctx.needs_input_grad[:5]
        dx = dw = None
        if need_x or need_w:
            dx, dw, _ = torch.ops.aten.convolution_backward(
                dy, xc, weight, None, list(cfg.stride), list(cfg.padding), [1, 1], False, [0, 0],
                1, [need_x, need_w, False])
        dgamma = sum_gx.to(cfg.gamma_dtype) if need_g else None
        dbeta = sum_g.to(cfg.beta_dtype) if need_b else None
        dout = passthrough_grad(grad, [(off, Co)]) if need_out else None
        return dx, dw, dgamma, dbeta, dout, None, None, None


def conv_bn_relu_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                      stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1, training=False,
                      out=None, out_offset=0):
    """relu(batch_norm(conv2d(x, weight))) with the extension's kernels; see the module doc.
    Inputs are checked by conv_bn_relu (the public entry point) before they get here."""
    check_kernel_dtype(x, "conv_bn_relu")
    if weight.dtype == torch.float32 and x.dtype != weight.dtype:
        weight = weight.to(x.dtype)  # fp32 master weights (autocast): differentiable cast
    if weight.dtype != x.dtype:
        raise TypeError(f"conv_bn_relu: weight dtype {weight.dtype} must be the input dtype "
                        f"{x.dtype} or float32")
    cfg = SimpleNamespace(kern=kernels(), stride=tuple(stride), padding=tuple(padding), eps=eps,
                          momentum=momentum, training=training, out_offset=out_offset,
                          has_out=out is not None,
                          gamma_dtype=bn_weight.dtype if bn_weight is not None else None,
                          beta_dtype=bn_bias.dtype if bn_bias is not None else None)
    res = _ConvBNReLUCuda.apply(x, weight, bn_weight, bn_bias, out, running_mean, running_var, cfg)
    if out is None:
        return res
    return res[:, out_offset:out_offset + weight.shape[0]]
