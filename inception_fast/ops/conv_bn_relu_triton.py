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

in_bn / defer (chains of units: the stems, nn/chain.py, and the blocks' branches,
nn/blocks.py): a unit called with defer=True stops after the BN statistics and returns its
pre-BN output y with its BN + ReLU coefficients (a, c) instead of relu(a*y + c) (the entry,
ops/conv_bn_relu.py, wraps them in a DeferredActivation, ops/deferred.py); the next unit,
called with in_bn=(a, c) on that y, applies them as its conv loads its operand tiles (forward
and wgrad: kernels/conv_common.bn_relu_operand). The activation between the two is never
written or read (2 x its size saved per link in forward, and it is not kept for backward). The
gradient the consumer returns for y is the gradient of the activation, which is what the
producer's backward (the BN + ReLU backward from y) takes; DeferredActivation.materialize()
keeps that convention for any other reader.

Inputs of fewer than 8 channels (the RGB image: a 6-byte bf16 pixel) cannot be loaded 16 bytes
at a time: such an x is zero-padded to 8 channels (channels_last) in the pass that casts it
for autocast, and the kernels see the weight zero-padded to match (ops/aligned_input.py); the
weight gradient is cut back to the weight's channels.

pool_after (the stem's Conv2d_2b -> maxpool1 and Conv2d_4a -> maxpool2): the result is
max_pool2d(unit output, 3, 2). BN + ReLU are applied inside the pool kernel, so the unit's
full-size output is never written; backward gathers the pooled gradient through the argmax
inside the BN backward kernels (no full-size gradient either).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .aligned_input import kernel_input, kernel_weight
from .bn_math import eval_affine
from .checks import conv_out_size
from .library import absent, absents, name, present, train_and_eval_ops
from .param_cache import ParamCache, version_key
from ..kernels.bn_relu_bwd import bn_relu_bwd_apply, bn_relu_bwd_coefficients
from ..kernels.bn_train import bn_finalize, bn_relu_apply
from ..kernels.conv2d_bwd import conv2d_dgrad, conv2d_wgrad
from ..kernels.conv2d_fwd import conv2d_fwd, pack_weight
from ..kernels.dtypes import check_bn_vectors, check_conv_operands, check_kernel_dtype
from ..kernels.max_pool3x3s2 import max_pool3x3s2_bwd, max_pool3x3s2_fwd
from ..kernels.sizes import conv_out_shape, pool3x3s2_out_hw

CL = torch.channels_last
# conv weight -> packed weights (BN-folded in eval with no grad), rebuilt when an input changed.
FOLD_CACHE = ParamCache("conv_bn_relu_triton.fold")
PACK_CACHE = ParamCache("conv_bn_relu_triton.pack")
def _folded(weight, bn_weight, bn_bias, running_mean, running_var, eps, dtype):
    key = version_key(weight, bn_weight, bn_bias, running_mean, running_var)
    key = None if key is None else key + (eps, dtype)

    def make():
        with torch.no_grad():
            _, _, a, c = eval_affine(bn_weight, bn_bias, running_mean, running_var, eps)
            return pack_weight(weight.float() * a[:, None, None, None], dtype), c
    return FOLD_CACHE.get(weight, key, make)


def _packed(weight, dtype):
    key = version_key(weight)
    key = None if key is None else key + (dtype,)
    return PACK_CACHE.get(weight, key, lambda: pack_weight(weight, dtype))


def _bn_train_stats(x, weight, bn_weight, bn_bias, running_mean, running_var, stride, padding,
                    eps, momentum, pool=None, in_bn=None):
    """conv (stats epilogue) + finalize: (y, mean, invstd, a, c, argmax or None); running
    stats updated; `pool`: the pool slice written in the same pass; `in_bn`: conv2d_fwd's."""
    y, psum, pm2, *idx = conv2d_fwd(x, weight, stride=stride, padding=padding, stats=True,
                                    packed=_packed(weight, x.dtype), pool_out=pool, in_bn=in_bn)
    count = y.shape[0] * y.shape[2] * y.shape[3]
    mean, invstd, a, c = bn_finalize(psum, pm2, count, eps=eps, momentum=momentum,
                                     gamma=bn_weight, beta=bn_bias, running_mean=running_mean,
                                     running_var=running_var)
    return y, mean, invstd, a, c, (idx[0] if idx else None)


def _slice(t, offset, channels):
    return None if t is None or offset < 0 else t[:, offset:offset + channels]


# ---- registered ops: the only callers of the kernels ---------------------------------------

def _forward(
        x: Tensor, weight: Tensor, bn_weight: Optional[Tensor], bn_bias: Optional[Tensor],
        running_mean: Optional[Tensor], running_var: Optional[Tensor], out: Optional[Tensor],
        in_a: Optional[Tensor], in_c: Optional[Tensor], stride: list[int], padding: list[int],
        eps: float, momentum: float, training: bool, out_offset: int, pool_offset: int,
        pool_after: bool, save: bool, defer: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(result, y, mean, invstd, a, c, argmax). result: the new output when `out` is None
    (else absent: it went into out[:, out_offset:+C_out]); pool_offset >= 0: max_pool2d(x, 3, 2)
    into out[:, pool_offset:+C_in] too; pool_after: the result max-pooled (3x3, stride 2), the
    argmax that of this pool. save: also return what backward needs (the pre-BN y, the BN
    vectors, the pool argmax); else those are absent and eval folds BN into the conv.
    in_a / in_c: x is a deferred unit's y, the conv's input relu(in_a*x + in_c). defer (with
    save): the result is absent, BN + ReLU left to the next unit (module doc)."""
    stride, padding = tuple(stride), tuple(padding)
    in_bn = None if in_a is None else (in_a, in_c)
    c_out = weight.shape[0]
    weight = kernel_weight(weight, x.shape[1])
    view, pool = _slice(out, out_offset if out is not None else -1, c_out), \
        _slice(out, pool_offset, x.shape[1])
    if training:
        y, mean, invstd, a, c, idx = _bn_train_stats(
            x, weight, bn_weight, bn_bias, running_mean, running_var, stride, padding, eps,
            momentum, pool, in_bn)
    elif save:
        res = conv2d_fwd(x, weight, stride=stride, padding=padding,
                         packed=_packed(weight, x.dtype), pool_out=pool, in_bn=in_bn)
        y, idx = res if pool is not None else (res, None)
        mean, invstd, a, c = eval_affine(bn_weight, bn_bias, running_mean, running_var, eps)
    else:  # eval, nothing to differentiate: BN folded into the conv, one kernel
        packed, bias = _folded(weight, bn_weight, bn_bias, running_mean, running_var, eps,
                               x.dtype)
        res = conv2d_fwd(x, weight, stride=stride, padding=padding, bias=bias, relu=True,
                         out=view, packed=packed, pool_out=pool, in_bn=in_bn)
        res = res[0] if pool is not None else res
        if pool_after:
            res = max_pool3x3s2_fwd(res)[0]
        return (absent(x) if out is not None else res,) + absents(x, 6)
    if pool_after:  # BN + ReLU inside the pool: the full-size output is never stored
        res, idx = max_pool3x3s2_fwd(y, bn_relu=(a, c))
    elif defer and save:  # BN + ReLU inside the next unit's operand loads
        res = absent(x)
    else:
        res = bn_relu_apply(y, a, c, out=view)
    if not save:
        return (absent(x) if out is not None else res,) + absents(x, 6)
    idx = absent(x, torch.uint8) if idx is None else idx
    return absent(x) if out is not None else res, y, mean, invstd, a, c, idx


conv_bn_relu_triton_train_fwd, conv_bn_relu_triton_eval_fwd = train_and_eval_ops(
    "conv_bn_relu_triton", _forward)


def conv_bn_relu_triton_fwd(x, weight, bn_weight, bn_bias, running_mean, running_var, out,
                            in_a, in_c, stride, padding, eps, momentum, training, out_offset,
                            pool_offset, pool_after, save, defer):
    op = conv_bn_relu_triton_train_fwd if training else conv_bn_relu_triton_eval_fwd
    return op(x, weight, bn_weight, bn_bias, running_mean, running_var, out, in_a, in_c, stride,
              padding, eps, momentum, training, out_offset, pool_offset, pool_after, save, defer)


@conv_bn_relu_triton_train_fwd.register_fake
@conv_bn_relu_triton_eval_fwd.register_fake
def _(x, weight, bn_weight, bn_bias, running_mean, running_var, out, in_a, in_c, stride,
      padding, eps, momentum, training, out_offset, pool_offset, pool_after, save, defer):
    n, c_in = x.shape[:2]
    shape = conv_out_shape(x.shape, weight.shape, stride, padding)
    c_out = shape[1]
    res_shape = shape[:2] + pool3x3s2_out_hw(*shape[2:]) if pool_after else shape
    res = (absent(x) if out is not None or (defer and save and not pool_after)
           else x.new_empty(res_shape).contiguous(memory_format=CL))
    if not save:
        return (res,) + absents(x, 6)
    vec = [x.new_empty((c_out,), dtype=torch.float32) for _ in range(4)]
    if pool_after:
        idx = x.new_empty(res_shape, dtype=torch.uint8).contiguous(memory_format=CL)
    elif pool_offset >= 0:
        idx = x.new_empty((n, c_in) + shape[2:], dtype=torch.uint8).contiguous(memory_format=CL)
    else:
        idx = absent(x, torch.uint8)
    return (res, x.new_empty(shape).contiguous(memory_format=CL), *vec, idx)


@torch.library.custom_op(name("conv_bn_relu_triton_bwd"), mutates_args=())
def conv_bn_relu_triton_bwd(
        grad: Tensor, x: Tensor, weight: Tensor, y: Tensor, mean: Tensor, invstd: Tensor,
        a: Tensor, c: Tensor, bn_weight: Optional[Tensor], argmax: Tensor, in_a: Optional[Tensor],
        in_c: Optional[Tensor], stride: list[int], padding: list[int], training: bool,
        out_offset: int, pool_offset: int, pool_after: bool,
        needs: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_w, grad_gamma, grad_beta, grad_out): float32 BN gradients; grad_out (the
    gradient of `out`'s old contents: `grad` with the written slices zeroed). `grad` is the
    whole output's gradient when out_offset >= 0, the pooled output's with pool_after (routed
    through `argmax` inside the BN backward kernels). in_a / in_c: the forward's (x a deferred
    y: grad_x is the gradient of relu(in_a*x + in_c), see the module doc). needs: which of the
    five to compute (the others are absent)."""
    stride, padding = tuple(stride), tuple(padding)
    need_x, need_w, need_g, need_b, need_out = needs
    c_out = weight.shape[0]
    wk = kernel_weight(weight, x.shape[1])
    grad_out_full = absent(grad)
    grad_pool = _slice(grad, pool_offset, x.shape[1])  # a view: no copy
    if out_offset >= 0:
        if need_out:  # the overwritten slices no longer depend on the old contents
            grad_out_full = grad.clone()
            grad_out_full[:, out_offset:out_offset + c_out].zero_()
            if pool_offset >= 0:
                _slice(grad_out_full, pool_offset, x.shape[1]).zero_()
        grad = grad[:, out_offset:out_offset + c_out]
    after = argmax if pool_after else None
    k1, k2, k3, grad_gamma, sum_dz = bn_relu_bwd_coefficients(
        grad, y, a, c, mean, invstd, bn_weight, training=training, pool_argmax=after)
    grad_x, grad_w = absent(grad), absent(grad)
    if need_x or need_w:
        grad_y = bn_relu_bwd_apply(grad, y, a, c, k1, k2, k3, shift=mean, pool_argmax=after)
        if need_x:
            grad_x = conv2d_dgrad(grad_y, wk, tuple(x.shape[2:]), stride=stride,
                                  padding=padding, packed=_packed(wk, grad_y.dtype))
            if grad_pool is not None:
                grad_x += max_pool3x3s2_bwd(grad_pool, argmax, tuple(x.shape[2:]))
        if need_w:
            # In the weight's dtype and layout (channels_last after model.to(channels_last)).
            grad_w = conv2d_wgrad(x, grad_y, tuple(weight.shape[2:]), stride=stride,
                                  padding=padding, out=torch.empty_like(wk),
                                  in_bn=None if in_a is None else (in_a, in_c))
            if wk is not weight:  # the padded input channels' gradients are dropped
                grad_w = torch.empty_like(weight).copy_(grad_w[:, :weight.shape[1]])
    return (grad_x, grad_w, grad_gamma if need_g else absent(grad),
            sum_dz if need_b else absent(grad), grad_out_full)


@conv_bn_relu_triton_bwd.register_fake
def _(grad, x, weight, y, mean, invstd, a, c, bn_weight, argmax, in_a, in_c, stride, padding,
      training, out_offset, pool_offset, pool_after, needs):
    need_x, need_w, need_g, need_b, need_out = needs
    vec = lambda: mean.new_empty(mean.shape)  # noqa: E731
    return (y.new_empty(x.shape).contiguous(memory_format=CL) if need_x else absent(grad),
            torch.empty_like(weight) if need_w
            else absent(grad),
            vec() if need_g else absent(grad), vec() if need_b else absent(grad),
            torch.empty_like(grad) if need_out and out_offset >= 0 else absent(grad))


# ---- autograd -------------------------------------------------------------------------------

class _ConvBNReLUFn(torch.autograd.Function):
    """Differentiable w.r.t. x, conv weight, BN weight and bias (and `out`, whose slice is
    overwritten: its gradient there is zero). Traced whole by torch.compile. With defer it
    returns (y, a, c), a and c not differentiable, and takes the gradient for y as that of
    relu(a*y + c) (module doc: in_bn / defer)."""

    @staticmethod
    def forward(ctx, x, weight, bn_weight, bn_bias, out, running_mean, running_var, in_a, in_c,
                stride, padding, eps, momentum, training, out_offset, pool_offset, pool_after,
                defer):
        res, y, mean, invstd, a, c, idx = conv_bn_relu_triton_fwd(
            x, weight, bn_weight, bn_bias, running_mean, running_var, out, in_a, in_c, stride,
            padding, eps, momentum, training, out_offset, pool_offset, pool_after, True, defer)
        ctx.save_for_backward(x, weight, y, mean, invstd, a, c, bn_weight, idx, in_a, in_c)
        ctx.args = (stride, padding, training, out_offset if out is not None else -1,
                    pool_offset, pool_after)
        ctx.dtypes = (None if bn_weight is None else bn_weight.dtype,
                      None if bn_bias is None else bn_bias.dtype)
        if defer:
            ctx.mark_non_differentiable(a, c)
            ctx.set_materialize_grads(False)  # no zero-filled gradients for a and c
            return y, a, c
        if out is None:
            return res
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad, *_):
        if grad is None:  # (defer: gradients are not materialized) nothing reached y
            return (None,) * 18
        x, weight, y, mean, invstd, a, c, bn_weight, idx, in_a, in_c = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:5])
        gx, gw, gg, gb, gout = conv_bn_relu_triton_bwd(grad, x, weight, y, mean, invstd, a, c,
                                                       bn_weight, idx, in_a, in_c, *ctx.args,
                                                       needs)
        g_dtype, b_dtype = ctx.dtypes
        return (present(gx), present(gw), gg.to(g_dtype) if needs[2] else None,
                gb.to(b_dtype) if needs[3] else None, present(gout)) + (None,) * 13


def _check(x, weight, bn_weight, bn_bias, running_mean, running_var, training):
    check_kernel_dtype(x, "conv_bn_relu(backend='triton')", "input")
    if weight.dtype not in (x.dtype, torch.float32):  # fp32 master weights: autocast's case
        raise TypeError(f"conv_bn_relu(backend='triton'): conv weight dtype {weight.dtype} must "
                        f"be the input dtype {x.dtype} or float32")
    c_out = weight.shape[0]
    for what, t in (("bn weight", bn_weight), ("bn bias", bn_bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        if t.shape != (c_out,):
            raise ValueError(f"conv_bn_relu(backend='triton'): {what} has shape {tuple(t.shape)}, "
                             f"expected ({c_out},) for {c_out} output channels")
        if t.device != x.device:
            raise ValueError(f"conv_bn_relu(backend='triton'): {what} is on {t.device}, the input "
                             f"on {x.device}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("conv_bn_relu(backend='triton'): eval mode needs running_mean and running_var")


def conv_bn_relu_triton(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                        stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1, training=False,
                        out=None, out_offset=0, pool_offset=None, pool_after=False,
                        in_bn=None, defer=False):
    """relu(batch_norm(conv2d(x, weight))) on the Triton kernels; arguments and semantics as
    conv_bn_relu_reference. `out` (N, C_total, OH, OW): the result goes into
    out[:, out_offset:out_offset + C_out] and that view is returned. `pool_offset` (3x3/2
    unpadded conv with `out` only): max_pool2d(x, 3, 2) into out[:, pool_offset:+C_in] too.
    `pool_after` (no `out`): returns max_pool2d(result, 3, 2), fused (module doc).
    in_bn = (a, c): the conv's input is relu(a*x + c), x a deferred y. defer (no out, pool):
    returns (t, a, c): t = y and its (a, c) when backward is needed (the BN + ReLU is left to
    the next unit's in_bn), else t = the result and a = c = None (eval folds BN)."""
    stride, padding = tuple(stride), tuple(padding)
    check_conv_operands(x, weight, "conv_bn_relu(backend='triton')")
    _check(x, weight, bn_weight, bn_bias, running_mean, running_var, training)
    check_bn_vectors(in_bn, x, "conv_bn_relu(backend='triton')")
    if in_bn is not None and pool_offset is not None:
        raise ValueError("conv_bn_relu(backend='triton'): a grid reduction pools x itself; it "
                         "takes no in_bn")
    if defer and (out is not None or pool_after or pool_offset is not None):
        raise ValueError("conv_bn_relu(backend='triton'): defer returns the unit's pre-BN "
                         "output; it takes no out, pool_offset or pool_after")
    x = kernel_input(x, in_bn, pool_offset)  # after every check: it launches the cast
    c_out = weight.shape[0]
    if out is not None:  # also checked by conv_bn_relu; this function is callable directly
        oh = conv_out_size(x.shape[2], weight.shape[2], stride[0], padding[0])
        ow = conv_out_size(x.shape[3], weight.shape[3], stride[1], padding[1])
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
    if pool_after and (out is not None or pool_offset is not None):
        raise ValueError("conv_bn_relu(backend='triton'): pool_after returns a new pooled "
                         "tensor: it takes no `out` and no pool_offset")
    if running_mean is None or running_var is None:
        running_mean = running_var = None
    in_a, in_c = in_bn if in_bn is not None else (None, None)
    args = (in_a, in_c, list(stride), list(padding), float(eps), float(momentum),
            bool(training), out_offset, -1 if pool_offset is None else pool_offset,
            bool(pool_after))
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bn_weight, bn_bias, out))
    if needs_grad:
        res = _ConvBNReLUFn.apply(x, weight, bn_weight, bn_bias, out, running_mean, running_var,
                                  *args, bool(defer))
        if defer:
            return res
    else:  # nothing to differentiate: eval folds BN into the conv, nothing is deferred
        res = conv_bn_relu_triton_fwd(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                      out, *args, False, False)[0]
    if defer:
        return res, None, None
    return res if out is None else out[:, out_offset:out_offset + c_out]
