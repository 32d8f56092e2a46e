"""ConvBNReLU: torchvision's BasicConv2d (conv without bias -> BatchNorm2d(eps=1e-3) -> ReLU),
same parameter names (`conv`, `bn`), computed by the fused op of the chosen backend."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .. import backends
from ..ops import conv_bn_relu
from ..ops.amp import autocast_dtype
from ..ops.deferred import tensor_of


def dispatch_key(name: str, x: torch.Tensor, train: bool) -> str:
    """backend="auto"'s cache key for one module call (dispatch.choose adds x's dtype)."""
    amp = autocast_dtype(x)
    return (f"{name}|{'x'.join(map(str, x.shape))}|{'train' if train else 'eval'}"
            + (f"|autocast-{str(amp).replace('torch.', '')}" if amp is not None else ""))


def timing_runner(module: nn.Module, x: torch.Tensor, backend: str, train: bool):
    """What backend="auto" times: a callable running a copy of `module` with every ConvBNReLU
    in it on `backend`, on a random input shaped (and laid out) like x; the module's own
    parameters and BN statistics are untouched."""
    import copy

    mod = copy.deepcopy(module)
    for m in mod.modules():
        if isinstance(m, ConvBNReLU):
            m.backend = backend
    fmt = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
           else torch.contiguous_format)
    xb = torch.randn(x.shape, device=x.device, dtype=x.dtype).contiguous(memory_format=fmt)

    def step():
        if train:
            xb.requires_grad_(True)
            mod(xb).sum().backward()
        else:
            with torch.no_grad():
                mod(xb)
    return step


def _counts_batches(m: "ConvBNReLU") -> bool:
    bn = m.bn
    return bn.training and bn.track_running_stats and bn.num_batches_tracked is not None


def count_batches(units) -> None:
    """num_batches_tracked += 1 for each unit in training that tracks it, as
    BatchNorm2d.forward does, before the units' bn_args. A fused block passes all its units:
    one foreach launch instead of an add_ launch per BN layer (7 to 10 per block)."""
    counters = [m.bn.num_batches_tracked for m in units if _counts_batches(m)]
    if counters:
        torch._foreach_add_(counters, 1)


class ConvBNReLU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 backend: str = "auto", eps: float = 1e-3, momentum: float | None = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.backend = backends.check(backend)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def bn_args(self) -> dict:
        """The BN arguments of one call of the fused op, exactly as torch.nn.BatchNorm2d.forward
        derives them: the running-stat update factor (momentum=None: the cumulative average
        1 / num_batches_tracked, read after count_batches bumped it), which buffers are updated
        or read, and whether batch statistics are used. The one home of this logic: forward
        and the fused blocks (nn/blocks.py) both call it, once per unit per call, after
        count_batches."""
        bn = self.bn
        factor = 0.0 if bn.momentum is None else bn.momentum
        if _counts_batches(self) and bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
        update = bn.training and bn.track_running_stats
        keep = update or not bn.training
        return dict(bn_weight=bn.weight, bn_bias=bn.bias,
                    running_mean=bn.running_mean if keep else None,
                    running_var=bn.running_var if keep else None, eps=bn.eps, momentum=factor,
                    training=bn.training or (bn.running_mean is None and bn.running_var is None))

    def backend_for(self, x) -> str:
        """The backend for a call on x (a tensor or a DeferredActivation); "auto" on a GPU: the
        one measured fastest for this layer's shape, dtype and mode (inception_fast.dispatch),
        never slower than cuDNN."""
        x = tensor_of(x)
        if not isinstance(x, torch.Tensor):
            return self.backend  # the op's input check says what is wrong
        if self.backend != "auto" or x.device.type != "cuda":
            return backends.resolve(self.backend, x)
        c = self.conv
        train = self.training and torch.is_grad_enabled()
        name = (f"ConvBNReLU {c.in_channels}->{c.out_channels} k{c.kernel_size} s{c.stride} "
                f"p{c.padding}")
        return backends.resolve("auto", x, key=dispatch_key(name, x, train),
                                runner=lambda b: timing_runner(self, x, b, train))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None, out_offset: int = 0,
                pool_after: bool = False, defer: bool = False):
        """`out`/`out_offset`: write into out[:, out_offset:out_offset+C_out] (copy-free concat).
        `pool_after`: return max_pool2d(result, 3, stride=2), fused on the Triton backend (the
        stem's unit + max-pool: nn/pool.MaxPool3x3s2.after). `defer`: may return a
        DeferredActivation for the next unit to apply as it loads it; x may be one
        (ops/conv_bn_relu.py, ops/deferred.py; run by nn/chain.conv_chain)."""
        backend = self.backend_for(x)
        count_batches([self])
        a = self.bn_args()
        return conv_bn_relu(
            x, self.conv.weight, a["bn_weight"], a["bn_bias"], a["running_mean"],
            a["running_var"], stride=_pair(self.conv.stride), padding=_pair(self.conv.padding),
            eps=a["eps"], momentum=a["momentum"], training=a["training"], out=out,
            out_offset=out_offset, pool_after=pool_after, defer=defer, backend=backend)
