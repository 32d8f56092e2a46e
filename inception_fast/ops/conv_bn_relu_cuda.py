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

Weights: fp32 master weights (autocast) or the input's dtype; the kernels' operands (the cast for
cuDNN, the (taps, C_in, C_out) packing for the asymmetric and grid kernels) are made once per
weight version (ops/param_cache.py), and the weight gradient comes back in the weight's dtype.

Activations are processed channels_last (NHWC); other layouts are converted first. `out`, when
given, receives the result in out[:, out_offset:out_offset + C_out] (copy-free concat when `out`
is channels_last, else through a temporary); autograd sees `out` modified in place, and the
gradient reaching the rest of `out` passes through unchanged (this op's slice gets zero).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backends import BackendUnavailableError
from ..kernels.dtypes import check_kernel_dtype as check_dtype
from .bn_math import eval_affine, f32_vec
from .csrc_reference import check_no_overlap, pack_weight
from .checks import conv_out_size
from .library import absent, name, present, train_and_eval_ops
from .param_cache import ParamCache, version_key
from ..kernels.sizes import conv_out_shape

CL = torch.channels_last

# Tests point this at inception_fast.ops.csrc_reference to run the Functions on CPU tensors.
kernels_override = None

# conv weight -> its operands in the input's dtype, rebuilt when the weight changes (identity or
# in-place version): a training step casts (fp32 master weights under autocast) and packs each
# weight once instead of on every call, forward and backward.
PACK_CACHE = ParamCache("conv_bn_relu_cuda.pack")
CAST_CACHE = ParamCache("conv_bn_relu_cuda.cast")


def _dtype_key(weight, dtype):
    key = version_key(weight)
    return None if key is None else key + (dtype,)


def packed_weight(weight, dtype):
    """The asymmetric / grid kernels' weight operand: contiguous (taps, C_in, C_out) in `dtype`."""
    return PACK_CACHE.get(weight, _dtype_key(weight, dtype),
                          lambda: pack_weight(weight.detach().to(dtype)))


def weight_as(weight, dtype):
    """The weight in `dtype` for cuDNN (the conv, its gradients); itself when it already is."""
    if weight.dtype == dtype:
        return weight.detach()
    return CAST_CACHE.get(weight, _dtype_key(weight, dtype), lambda: weight.detach().to(dtype))


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
    """The CUDA kernels take the Triton kernels' dtypes (kernels/dtypes.py, one message)."""
    check_dtype(x, f"{what}(backend='cuda')", "input", gemm=False)


def check_weight_dtype(weight, x, what):
    """The conv weight is in the input's dtype, or fp32 master weights under autocast (a half
    precision input): the ops cast and pack those once per weight version (packed_weight,
    weight_as) and return the weight gradient in fp32, as torch's autocast conv does. Any other
    mismatch is an error: the kernels take one dtype for both operands."""
    if weight is None or weight.dtype == x.dtype or weight.dtype == torch.float32:
        return
    raise TypeError(f"{what}: weight dtype {weight.dtype} must be the input dtype {x.dtype} or "
                    f"float32")


def check_out_not_input(out, x, what):
    """The kernels read x while they write `out` (through __restrict__ pointers in csrc/): the
    two must not share memory. Checked here too so that every path (CPU, cuDNN, fused) refuses
    it alike, with csrc/bindings.cpp's message."""
    check_no_overlap(out, x, f"{what}(backend='cuda')", "out", "the input")


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


def bn_forward(kern, y, stats, gamma, beta, running_mean, running_var, *, training, eps, momentum,
               packed=False):
    """BN parameters for the apply kernel. Training: finalize the batch statistics `stats` (fp64
    sum, sumsq; computed here from y when None) and update the running buffers; eval: fold the
    running statistics. Returns fp32 (mean, invstd, scale, shift); packed: one fp32 (5, C)
    tensor of rows (mean, var, invstd, scale, shift) instead (a registered op's one output;
    the four vectors are views of it, which a registered op may not return side by side)."""
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
        fin = kern.bn_finalize(stats[0], stats[1], count, eps, gamma, beta)
        mean, var, invstd, scale, shift = fin.unbind(0)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            if running_var is not None:
                unbiased = var.double() * (count / (count - 1))
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        if packed:
            return fin
        return mean.contiguous(), invstd.contiguous(), scale.contiguous(), shift.contiguous()
    vecs = eval_affine(gamma, beta, running_mean, running_var, eps)
    if packed:
        return torch.stack([vecs[0], running_var.detach().float(), *vecs[1:]])
    return vecs


def bn_rows(bn):
    """(mean, invstd, scale, shift) of bn_forward(..., packed=True)."""
    return bn[0], bn[2], bn[3], bn[4]


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


def _forward(x: Tensor, weight: Tensor, gamma: Optional[Tensor], beta: Optional[Tensor],
             running_mean: Optional[Tensor], running_var: Optional[Tensor],
             out: Optional[Tensor], stride: list[int], padding: list[int], eps: float,
             momentum: float, training: bool, out_offset: int,
             save: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(result, y, bn): result is absent when it went into out[:, out_offset:+C_out]; with
    `save`, y is the pre-BN conv output and bn the (5, C) BN rows of bn_forward(packed=True),
    else both absent."""
    kern = kernels()
    check_out_not_input(out, x, "conv_bn_relu")
    stride, padding = tuple(stride), tuple(padding)
    xc = x.contiguous(memory_format=CL)
    N, _, H, W = xc.shape
    Co = weight.shape[0]
    OH = conv_out_size(H, weight.shape[2], stride[0], padding[0])
    OW = conv_out_size(W, weight.shape[3], stride[1], padding[1])
    g32, b32 = f32_vec(gamma), f32_vec(beta)
    asym = use_asym_conv(kern, xc.shape, weight.shape, stride, padding)
    pad = asym_taps(weight.shape, stride, padding)[1] if asym else 0
    direct = out is not None and out.is_contiguous(memory_format=CL)
    if direct:
        target, off = out, out_offset
    else:
        target, off = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device,
                                  memory_format=CL), 0
    if not training and asym and not save:
        # Eval, nothing to differentiate: conv + folded BN + ReLU in one kernel.
        _, _, scale, shift = eval_affine(g32, b32, running_mean, running_var, eps)
        kern.asym_conv(xc, weight.detach(), pad, target, off, None, None, scale, shift,
                       packed=packed_weight(weight, x.dtype))
        y = bn = absent(x)
    else:
        stats = None
        if asym:
            y = torch.empty((N, Co, OH, OW), dtype=x.dtype, device=x.device, memory_format=CL)
            if training:
                stats = (torch.zeros(Co, dtype=torch.float64, device=x.device),
                         torch.zeros(Co, dtype=torch.float64, device=x.device))
                kern.asym_conv(xc, weight.detach(), pad, y, 0, *stats,
                               packed=packed_weight(weight, x.dtype))
            else:
                kern.asym_conv(xc, weight.detach(), pad, y, 0,
                               packed=packed_weight(weight, x.dtype))
        else:  # cuDNN
            y = F.conv2d(xc, weight_as(weight, x.dtype), None, stride, padding)
            y = y.contiguous(memory_format=CL)
        bn = bn_forward(kern, y, stats, g32, b32, running_mean, running_var, training=training,
                        eps=eps, momentum=momentum, packed=True)
        kern.bn_apply_relu(y, bn[3], bn[4], target, off)
    if out is not None and not direct:
        out[:, out_offset:out_offset + Co].copy_(target)
    result = target if out is None else absent(x)
    if not save:
        return result, absent(x), absent(x)
    return result, y, bn


conv_bn_relu_cuda_train_fwd, conv_bn_relu_cuda_eval_fwd = train_and_eval_ops(
    "conv_bn_relu_cuda", _forward)


@conv_bn_relu_cuda_train_fwd.register_fake
@conv_bn_relu_cuda_eval_fwd.register_fake
def _(x, weight, gamma, beta, running_mean, running_var, out, stride, padding, eps, momentum,
      training, out_offset, save):
    shape = conv_out_shape(x.shape, weight.shape, stride, padding)
    co = shape[1]
    result = absent(x) if out is not None else x.new_empty(shape).contiguous(memory_format=CL)
    if not save:
        return result, absent(x), absent(x)
    return (result, x.new_empty(shape).contiguous(memory_format=CL),
            x.new_empty((5, co), dtype=torch.float32))


@torch.library.custom_op(name("conv_bn_relu_cuda_bwd"), mutates_args=())
def conv_bn_relu_cuda_bwd(grad: Tensor, x: Tensor, weight: Tensor, y: Tensor, bn: Tensor,
                          stride: list[int],
                          padding: list[int], training: bool, out_offset: int,
                          needs: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dw, dgamma, dbeta, dout): dgamma / dbeta float64 sums; dout: the gradient of
    `out`'s old contents (out_offset >= 0: `grad` is the whole output's). needs: which of the
    five to compute (the others are absent)."""
    need_x, need_w, need_g, need_b, need_out = needs
    Co = weight.shape[0]
    off = max(out_offset, 0)
    dx = dw = sum_g = sum_gx = None
    if need_x or need_w or need_g or need_b:  # else y / bn were not saved (absent)
        dy, sum_g, sum_gx = bn_relu_backward(kernels(), grad, off, y, *bn_rows(bn), training)
    if need_x or need_w:
        dx, dw, _ = torch.ops.aten.convolution_backward(
            dy, x.contiguous(memory_format=CL), weight_as(weight, x.dtype), None, list(stride),
            list(padding), [1, 1], False, [0, 0], 1, [need_x, need_w, False])
        if dw is not None and dw.dtype != weight.dtype:  # fp32 master weights: fp32 gradient
            dw = dw.to(weight.dtype)
    dout = passthrough_grad(grad, [(off, Co)]) if need_out and out_offset >= 0 else None
    return tuple(absent(grad) if t is None else t
                 for t in (dx, dw, sum_gx if need_g else None, sum_g if need_b else None, dout))


@conv_bn_relu_cuda_bwd.register_fake
def _(grad, x, weight, y, bn, stride, padding, training, out_offset, needs):
    need_x, need_w, need_g, need_b, need_out = needs
    dx = dw = None
    if need_x or need_w:  # aten's own meta function gives the exact strides
        dx, dw, _ = torch.ops.aten.convolution_backward(
            torch.empty_like(y), x.contiguous(memory_format=CL), weight.to(x.dtype), None,
            list(stride), list(padding), [1, 1], False, [0, 0], 1, [need_x, need_w, False])
        if dw is not None and dw.dtype != weight.dtype:
            dw = dw.to(weight.dtype)
    vec = lambda: bn.new_empty(bn.shape[1:], dtype=torch.float64)  # noqa: E731
    return tuple(absent(grad) if t is None else t
                 for t in (dx, dw, vec() if need_g else None, vec() if need_b else None,
                           torch.empty_like(grad) if need_out and out_offset >= 0 else None))


class _ConvBNReLUCuda(torch.autograd.Function):
    """Calls the registered ops; traced whole by torch.compile."""

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, out, running_mean, running_var, stride, padding,
                eps, momentum, training, out_offset):
        fwd = conv_bn_relu_cuda_train_fwd if training else conv_bn_relu_cuda_eval_fwd
        # Only `out` needing a gradient (its other slices pass through): nothing of this op's
        # maths is differentiated, so eval keeps its one-kernel path and saves nothing.
        save = any(ctx.needs_input_grad[:4])
        result, y, bn = fwd(x, weight, gamma, beta, running_mean, running_var, out, stride,
                            padding, eps, momentum, training, out_offset, save)
        ctx.save_for_backward(x, weight, y, bn)
        ctx.args = (stride, padding, training, out_offset if out is not None else -1)
        ctx.dtypes = (None if gamma is None else gamma.dtype, None if beta is None else beta.dtype)
        if out is None:
            return result
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, y, bn = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:5])
        dx, dw, dgamma, dbeta, dout = conv_bn_relu_cuda_bwd(grad, x, weight, y, bn, *ctx.args,
                                                            needs)
        g_dtype, b_dtype = ctx.dtypes
        return (present(dx), present(dw), dgamma.to(g_dtype) if needs[2] else None,
                dbeta.to(b_dtype) if needs[3] else None, present(dout)) + (None,) * 8


def conv_bn_relu_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                      stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1, training=False,
                      out=None, out_offset=0):
    """relu(batch_norm(conv2d(x, weight))) with the extension's kernels; see the module doc.
    Inputs are checked by conv_bn_relu (the public entry point) before they get here."""
    check_kernel_dtype(x, "conv_bn_relu")
    check_weight_dtype(weight, x, "conv_bn_relu")
    args = (list(stride), list(padding), float(eps), float(momentum), bool(training), out_offset)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bn_weight, bn_bias, out))
    if needs_grad:
        res = _ConvBNReLUCuda.apply(x, weight, bn_weight, bn_bias, out, running_mean, running_var,
                                    *args)
    else:
        fwd = conv_bn_relu_cuda_train_fwd if training else conv_bn_relu_cuda_eval_fwd
        res = fwd(x, weight, bn_weight, bn_bias, running_mean, running_var, out, *args, False)[0]
    if out is None:
        return res
    return out[:, out_offset:out_offset + weight.shape[0]]
