"""conv2d (no bias) -> BatchNorm2d -> ReLU as one op, and its pure-torch reference.

Semantics (all backends): y = relu(batch_norm(conv2d(x, weight, stride, padding))).
In training, BN uses the batch statistics and updates running_mean / running_var in place
with `momentum` (the already-resolved exponential average factor, as BatchNorm2d computes
it; unbiased variance for the running estimate). In eval, BN uses the running statistics.
If `out` is given, the result is written into out[:, offset:offset + C_out] and that slice
(a view of `out`) is returned; the rest of `out` is left untouched. `pool_after` (no `out`):
the result is max_pool2d(y, 3, stride=2), the stem's conv unit and the max-pool after it as one
op (the Triton backend never writes the unit's full-size output).
`defer` (no `out`, no `pool_after`): where the backend can (Triton, when backward is needed) the
result is a DeferredActivation (ops/deferred.py): the unit's pre-BN output and BN coefficients,
the activation not computed; elsewhere the result tensor as usual. `x` may be a
DeferredActivation: the Triton backend applies its BN + ReLU as the conv loads it, the others
materialize it. nn/chain.py and nn/blocks.py chain units this way.
"""
from __future__ import annotations

import torch.nn.functional as F

from .. import backends
from .amp import autocast_dtype, autocast_input
from .checks import check_conv_input, check_out_slice, conv_out_size
from .deferred import DeferredActivation


def conv_bn_relu_reference(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                           stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1,
                           training=False, out=None, out_offset=0, pool_after=False):
    """The oracle: torch's own conv2d + batch_norm + relu (cuDNN on a GPU)."""
    if isinstance(x, DeferredActivation):
        x = x.materialize()
    y = F.conv2d(x, weight, None, stride, padding)
    y = F.batch_norm(y, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    y = F.relu(y)
    if pool_after:
        return F.max_pool2d(y, kernel_size=3, stride=2)
    if out is None:
        return y
    view = out[:, out_offset:out_offset + y.shape[1]]
    view.copy_(y)
    return view


def conv_bn_relu(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                 stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1, training=False,
                 out=None, out_offset=0, pool_after=False, defer=False, backend="torch"):
    """Checked entry point: validates inputs, resolves `backend` for this call, dispatches.
    Under torch.autocast the fused backends cast x as autocast casts a conv input (ops/amp.py)."""
    deferred = x if isinstance(x, DeferredActivation) else None
    if deferred is not None:
        x = deferred.pre_bn
    check_conv_input(x, weight)
    if pool_after and out is not None:
        raise ValueError("conv_bn_relu: pool_after returns a new pooled tensor; it takes no out")
    if defer and (out is not None or pool_after):
        raise ValueError("conv_bn_relu: defer returns the unit's own result; it takes no out "
                         "and no pool_after")
    b = backends.resolve(backend, x)
    if deferred is not None and b != "triton":
        x = deferred.materialize()
    if b == "cuda":  # the Triton op casts (and aligns) its input itself
        x = autocast_input(x)
    if out is not None:
        oh = conv_out_size(x.shape[2], weight.shape[2], stride[0], padding[0])
        ow = conv_out_size(x.shape[3], weight.shape[3], stride[1], padding[1])
        check_out_slice(out, x.shape, weight.shape[0], out_offset, oh, ow,
                        autocast_dtype(x) or x.dtype, x.device)  # the conv's result dtype
    kwargs = dict(stride=tuple(stride), padding=tuple(padding), eps=eps, momentum=momentum,
                  training=training, out=out, out_offset=out_offset, pool_after=pool_after)
    if b == "triton":
        from .conv_bn_relu_triton import conv_bn_relu_triton

        in_bn = None if deferred is None else (deferred.a, deferred.c)
        res = conv_bn_relu_triton(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                  in_bn=in_bn, defer=defer, **kwargs)
        if not defer:
            return res
        t, a, c = res
        return t if a is None else DeferredActivation(t, a, c)
    if b == "torch":
        return conv_bn_relu_reference(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                      **kwargs)
    from .conv_bn_relu_cuda import conv_bn_relu_cuda

    pool_after = kwargs.pop("pool_after")
    res = conv_bn_relu_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var, **kwargs)
    return F.max_pool2d(res, kernel_size=3, stride=2) if pool_after else res
