"""conv2d (no bias) -> BatchNorm2d -> ReLU as one op, and its pure-torch reference.

Semantics (all backends): y = relu(batch_norm(conv2d(x, weight, stride, padding))).
In training, BN uses the batch statistics and updates running_mean / running_var in place
with `momentum` (the already-resolved exponential average factor, as BatchNorm2d computes
it; unbiased variance for the running estimate). In eval, BN uses the running statistics.
If `out` is given, the result is written into out[:, offset:offset + C_out] and that slice
(a view of `out`) is returned; the rest of `out` is left untouched. `pool_after` (no `out`):
the result is max_pool2d(y, 3, stride=2), the stem's conv unit and the max-pool after it as one
op (the Triton backend never writes the unit's full-size output).
`in_bn` = (a, c), float32 [C_in]: the conv's input is relu(a*x + c) per channel (x a deferred
unit's pre-BN output). `defer` (no `out`, no `pool_after`): returns (t, a, c); where the backend
defers (Triton, when backward is needed) t is the unit's pre-BN output y and (a, c) its BN +
ReLU coefficients, for the next unit's `in_bn` (the activation relu(a*y + c) is never written;
the gradient that unit gives y is the activation's); elsewhere t is the result and a = c = None.
nn/chain.py runs units this way.
"""
from __future__ import annotations

import torch.nn.functional as F

from .. import backends
from .amp import autocast_dtype, autocast_input
from .checks import check_conv_input, check_out_slice, conv_out_size


def conv_bn_relu_reference(x, weight, bn_weight, bn_bias, running_mean, running_var, *,
                           stride=(1, 1), padding=(0, 0), eps=1e-3, momentum=0.1,
                           training=False, out=None, out_offset=0, pool_after=False, in_bn=None):
    """The oracle: torch's own conv2d + batch_norm + relu (cuDNN on a GPU)."""
    if in_bn is not None:
        a, c = (v.view(1, -1, 1, 1) for v in in_bn)
        x = F.relu(x * a + c).to(x.dtype)
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
                 out=None, out_offset=0, pool_after=False, in_bn=None, defer=False,
                 backend="torch"):
    """Checked entry point: validates inputs, resolves `backend` for this call, dispatches.
    Under torch.autocast the fused backends cast x as autocast casts a conv input (ops/amp.py)."""
    check_conv_input(x, weight)
    if pool_after and out is not None:
        raise ValueError("conv_bn_relu: pool_after returns a new pooled tensor; it takes no out")
    if defer and (out is not None or pool_after):
        raise ValueError("conv_bn_relu: defer returns the unit's own result; it takes no out "
                         "and no pool_after")
    b = backends.resolve(backend, x)
    if in_bn is not None and b != "triton":
        # A deferred y's gradient is its activation's: only the Triton backward takes it so
        # (module doc); through any other backend autograd would hand the producer dL/dy.
        raise ValueError(f"conv_bn_relu: in_bn (a deferred input) needs backend='triton', "
                         f"this call resolved to {b!r}")
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

        return conv_bn_relu_triton(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                   in_bn=in_bn, defer=defer, **kwargs)
    if b == "torch":
        res = conv_bn_relu_reference(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                     **kwargs)
    else:
        from .conv_bn_relu_cuda import conv_bn_relu_cuda

        pool_after = kwargs.pop("pool_after")
        res = conv_bn_relu_cuda(x, weight, bn_weight, bn_bias, running_mean, running_var,
                                **kwargs)
        res = F.max_pool2d(res, kernel_size=3, stride=2) if pool_after else res
    return (res, None, None) if defer else res
