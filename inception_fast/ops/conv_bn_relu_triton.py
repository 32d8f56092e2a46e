"""conv2d -> BatchNorm -> ReLU on the Triton kernels (backend="triton"), forward and backward.

Same semantics as conv_bn_relu_reference (see conv_bn_relu.py). Paths:
  eval, no grad    BN folded into the conv weight and a bias (cached; recomputed when the conv
                   weight, BN weight/bias or running stats change: keyed on identity and
                   `._version`), one kernel: conv + bias + ReLU into the output (slice).
  train            conv with the BN-statistics epilogue -> finalize (mean, invstd, running
                   stats update) -> apply relu(a*y + c) into the output (slice).
  eval with grad   conv -> apply with the running stats (backward needs y).
Backward (kernels/bn_relu_bwd.py, kernels/conv2d_bwd.py): ReLU mask + BN backward from the saved
pre-BN conv output y, then dgrad and wgrad. Results are channels_last.

pool_offset (a grid reduction, Mixed_6a: 3x3 / stride-2 / unpadded conv writing into `out`):
max_pool2d(x, 3, 2) goes into out[:, pool_offset:pool_offset + C_in] from the same pass over
the input windows (kernels/conv3x3s2_pool.py); in backward the pool slice's gradient is routed
to its argmax (kernels/max_pool3x3s2.py) and added to the input gradient.
"""
from __future__ import annotations

import torch
from torch.autograd.graph import increment_version
from torch.utils.weak import WeakIdKeyDictionary

from .param_cache import cached, version_key
from ..kernels.bn_train import bn_finalize, bn_relu_apply
from ..kernels.conv2d_fwd import conv2d_fwd, out_size, pack_weight
from ..kernels.dtypes import check_kernel_dtype

# conv weight tensor -> (key, tensors): packed weights survive across calls while unchanged.
_FOLD_CACHE = WeakIdKeyDictionary()
_PACK_CACHE = WeakIdKeyDictionary()


def _affine_from_running(bn_weight, bn_bias, running_mean, running_var, eps):
    """Eval BN as relu(a*y + c): float32 a = gamma/sqrt(var + eps), c = beta - mean*a."""
    invstd = torch.rsqrt(running_var.float() + eps)
    mean = running_mean.float()
    a = invstd if bn_weight is None else bn_weight.float() * invstd
    c = -mean * a if bn_bias is None else bn_bias.float() - mean * a
    return mean, invstd, a.contiguous(), c.contiguous()


def _folded(weight, bn_weight, bn_bias, running_mean, running_var, eps, dtype):
    key = version_key(weight, bn_weight, bn_bias, running_mean, running_var)
    key = None if key is None else key + (eps, dtype)

    def make():
        with torch.no_grad():
            _, _, a, c = _affine_from_running(bn_weight, bn_bias, running_mean, running_var, eps)
            return pack_weight(weight.float() * a[:, None, None, None], dtype), c
    return cached(_FOLD_CACHE, weight, key, make)


def _packed(weight, dtype):
    key = version_key(weight)
    key = None if key is None else key + (dtype,)
    return cached(_PACK_CACHE, weight, key, lambda: pack_weight(weight, dtype))


def _check(x, weight, bn_weight, bn_bias, running_mean, running_var, training):
    check_kernel_dtype(x, "conv_bn_relu(backend='triton')", "input")
    if weight.dtype not in (x.dtype, torch.float32):  # fp32 master weights: autocast's case
        raise TypeError(f"conv_bn_relu(backend='triton'): conv weight dtype {weight.dtype} must "
                        f"be the input dtype {x.dtype} or float32")
    c_out = weight.shape[0]
    for name, t in (("bn weight", bn_weight), ("bn bias", bn_bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        if t.shape != (c_out,):
            raise ValueError(f"conv_bn_relu(backend='triton'): {name} has shape {tuple(t.shape)}, "
                             f"expected ({c_out},) for {c_out} output channels")
        if t.device != x.device:
            raise ValueError(f"conv_bn_relu(backend='triton'): {name} is on {t.device}, the input "
                             f"on {x.device}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("conv_bn_relu(backend='triton'): eval mode needs running_mean and running_var")


def _bump(t):
    """Tensors written through a raw pointer: bump the version counter like an in-place op, so
    autograd's saved-tensor checks and the caches here see the change."""
    if t is not None:
        try:
            increment_version(t)
        except RuntimeError:  # inference tensors have no version counter
            pass


def _bn_train_stats(x, weight, bn_weight, bn_bias, running_mean, running_var, stride, padding,
                    eps, momentum, pool=None):
    """conv (stats epilogue) + finalize: (y, mean, invstd, a, c, argmax or None); running
    stats updated; `pool`: the pool slice written in the same pass."""
    y, psum, pm2, *idx = conv2d_fwd(x, weight, stride=stride, padding=padding, stats=True,
                                    packed=_packed(weight, x.dtype), pool_out=pool)
    count = y.shape[0] * y.shape[2] * y.shape[3]
    mean, invstd, a, c = bn_finalize(psum, pm2, count, eps=eps, momentum=momentum,
                                     gamma=bn_weight, beta=bn_bias, running_mean=running_mean,
                                     running_var=running_var)
    _bump(running_mean)
    _bump(running_var)
    return y, mean, invstd, a, c, (idx[0] if idx else None)


def bn_relu_bwd_coefficients(g, y, a, c, mean, invstd, gamma, training):
    """ReLU + BN backward from the pre-BN y and the upstream g: (k1, k2, k3) for
    bn_relu_bwd_apply (dy = k1*dz + k2*(y - mean) + k3), and the gamma / beta gradients.
    Shared by every Triton op with a BN+ReLU epilogue (also ops/conv1x1_multi.py)."""
    from ..kernels.bn_relu_bwd import bn_relu_bwd_reduce

    sum_dz, sum_dz_yc = bn_relu_bwd_reduce(g, y, a, c, shift=mean)  # centered: see the kernel
    grad_gamma = sum_dz_yc * invstd
    if training:
        m = y.shape[0] * y.shape[2] * y.shape[3]
        k1 = gamma * invstd
        k2 = -gamma * invstd * invstd * grad_gamma / m
        k3 = -gamma * invstd * sum_dz / m
    else:
        k1, k2, k3 = a, torch.zeros_like(a), torch.zeros_like(a)
    return k1, k2, k3, grad_gamma, sum_dz


def _pool_view(out, pool_offset, x):
    return None if pool_offset is None else out[:, pool_offset:pool_offset + x.shape[1]]


class _ConvBNReLUFn(torch.autograd.Function):
    """Differentiable w.r.t. x, conv weight, BN weight and bias (and `out`, whose slice is
    overwritten: its gradient there is zero)."""

    @staticmethod
    def forward(ctx, x, weight, bn_weight, bn_bias, out, cfg):
        (stride, padding, eps, momentum, training, running_mean, running_var, out_offset,
         pool_offset) = cfg
        pool = _pool_view(out, pool_offset, x)
        if training:
            y, mean, invstd, a, c, idx = _bn_train_stats(
                x, weight, bn_weight, bn_bias, running_mean, running_var, stride, padding, eps,
                momentum, pool)
        else:
            res = conv2d_fwd(x, weight, stride=stride, padding=padding,
                             packed=_packed(weight, x.dtype), pool_out=pool)
            y, idx = res if pool is not None else (res, None)
            mean, invstd, a, c = _affine_from_running(bn_weight, bn_bias, running_mean,
                                                      running_var, eps)
        c_out = weight.shape[0]
        if out is None:
            result = bn_relu_apply(y, a, c)
        else:
            bn_relu_apply(y, a, c, out=out[:, out_offset:out_offset + c_out])
            ctx.mark_dirty(out)
            result = out
        ctx.save_for_backward(x, weight, y, mean, invstd, a, c,
                              bn_weight if bn_weight is not None else None, idx)
        ctx.cfg = (stride, padding, training, out_offset, out is not None,
                   None if bn_bias is None else bn_bias.dtype, pool_offset)
        return result

    @staticmethod
    def backward(ctx, grad):
        from ..kernels.bn_relu_bwd import bn_relu_bwd_apply
        from ..kernels.conv2d_bwd import conv2d_dgrad, conv2d_wgrad
        from ..kernels.max_pool3x3s2 import max_pool3x3s2_bwd

        x, weight, y, mean, invstd, a, c, bn_weight, idx = ctx.saved_tensors
        stride, padding, training, out_offset, has_out, bias_dtype, pool_offset = ctx.cfg
        need_x, need_w, need_g, need_b, need_out = ctx.needs_input_grad[:5]
        c_out = weight.shape[0]
        grad_out_full = None
        grad_pool = _pool_view(grad, pool_offset, x)  # a view: no copy
        if has_out:
            if need_out:  # the overwritten slices no longer depend on the old contents
                grad_out_full = grad.clone()
                grad_out_full[:, out_offset:out_offset + c_out].zero_()
                if pool_offset is not None:
                    _pool_view(grad_out_full, pool_offset, x).zero_()
            grad = grad[:, out_offset:out_offset + c_out]
        gamma = bn_weight.float() if bn_weight is not None else torch.ones_like(invstd)
        k1, k2, k3, grad_gamma, sum_dz = bn_relu_bwd_coefficients(grad, y, a, c, mean, invstd,
                                                                  gamma, training)
        grad_x = grad_w = None
        if need_x or need_w:
            grad_y = bn_relu_bwd_apply(grad, y, a, c, k1.contiguous(), k2.contiguous(),
                                       k3.contiguous(), shift=mean)
            if need_x:
                grad_x = conv2d_dgrad(grad_y, weight, tuple(x.shape[2:]), stride=stride,
                                      padding=padding)
                if grad_pool is not None:
                    grad_x += max_pool3x3s2_bwd(grad_pool, idx, tuple(x.shape[2:]))
            if need_w:
                grad_w = conv2d_wgrad(x, grad_y, tuple(weight.shape[2:]), stride=stride,
                                      padding=padding).to(weight.dtype)
        g_gamma = grad_gamma.to(bn_weight.dtype) if need_g else None
        g_beta = sum_dz.to(bias_dtype) if need_b else None
        return grad_x, grad_w, g_gamma, g_beta, grad_out_full, None


def conv_bn_relu_triton(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                        stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1, training=False,
                        out=None, out_offset=0, pool_offset=None):
    """relu(batch_norm(conv2d(x, weight))) on the Triton kernels; arguments and semantics as
    conv_bn_relu_reference. `out` (N, C_total, OH, OW): the result goes into
    out[:, out_offset:out_offset + C_out] and that view is returned. `pool_offset` (3x3/2
    unpadded conv with `out` only): max_pool2d(x, 3, 2) into out[:, pool_offset:+C_in] too."""
    stride, padding = tuple(stride), tuple(padding)
    _check(x, weight, bn_weight, bn_bias, running_mean, running_var, training)
    c_out = weight.shape[0]
    if out is not None:  # also checked by conv_bn_relu; this function is callable directly
        oh = out_size(x.shape[2], weight.shape[2], stride[0], padding[0])
        ow = out_size(x.shape[3], weight.shape[3], stride[1], padding[1])
        if (out.dim() != 4 or out.shape[0] != x.shape[0] or tuple(out.shape[2:]) != (oh, ow)
                or out_offset < 0 or out_offset + c_out > out.shape[1]):
            raise ValueError(f"conv_bn_relu(backend='triton'): out of shape {tuple(out.shape)} "
                             f"has no channel slice [{out_offset}, {out_offset + c_out}) of "
                             f"({x.shape[0]}, C, {oh}, {ow})")
        if out.dtype != x.dtype or out.device != x.device:
            raise ValueError(f"conv_bn_relu(backend='triton'): out must be {x.dtype} on {x.device}")
    if pool_offset is not None:
        c_in = x.shape[1]
        if out is None or pool_offset < 0 or pool_offset + c_in > out.shape[1] or (
                pool_offset < out_offset + c_out and out_offset < pool_offset + c_in):
            raise ValueError(f"conv_bn_relu(backend='triton'): the pool slice [{pool_offset}, "
                             f"{pool_offset + c_in}) must fit in `out` beside the conv slice "
                             f"[{out_offset}, {out_offset + c_out})")
    if running_mean is None or running_var is None:
        running_mean = running_var = None
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bn_weight, bn_bias, out))
    if needs_grad:
        cfg = (stride, padding, float(eps), float(momentum), bool(training), running_mean,
               running_var, out_offset, pool_offset)
        res = _ConvBNReLUFn.apply(x, weight, bn_weight, bn_bias, out, cfg)
        return res if out is None else res[:, out_offset:out_offset + c_out]

    view = None if out is None else out[:, out_offset:out_offset + c_out]
    pool = _pool_view(out, pool_offset, x)
    with torch.no_grad():
        if training:
            y, _, _, a, c, _ = _bn_train_stats(x, weight, bn_weight, bn_bias, running_mean,
                                               running_var, stride, padding, eps, momentum, pool)
            res = bn_relu_apply(y, a, c, out=view)
        else:
            packed, bias = _folded(weight, bn_weight, bn_bias, running_mean, running_var,
                                   float(eps), x.dtype)
            res = conv2d_fwd(x, weight, stride=stride, padding=padding, bias=bias, relu=True,
                             out=view, packed=packed, pool_out=pool)
            res = res[0] if pool is not None else res
    _bump(out)
    return res
