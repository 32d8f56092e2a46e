"""The Inception blocks (torchvision's InceptionA-E and InceptionAux), parameter names and
channel order identical to torchvision.models.inception, built from ConvBNReLU.

Two forward structures, chosen per call from the backend the block's units resolve to:
- "torch" (also "auto" when it resolves to torch, e.g. on CPU): exactly torchvision's
  structure (torch.cat of the branches), the reference.
- fused backends ("triton", "cuda"): the block allocates ONE channels_last output and every
  branch's last unit writes its channel slice (no torch.cat, no copying split); the 1x1 units
  that read the block input run as one GEMM (ops/conv1x1_multi.py), the pool branch's 1x1 conv
  joins that GEMM and its avg-pool runs after it on the conv's few channels (BN statistics after
  the pool); the grid reductions write their max-pool slice directly (CUDA grid-reduction op,
  or the Triton max-pool). Each writer gets its own detached alias of the output and _Join ties
  them together, so in backward every branch reads its gradient slice as a view. Within a
  branch, a unit whose readers all run on Triton leaves its BN + ReLU to their operand loads
  (_link, _chain; nn/chain.py): the intermediate activation is never written.
The structure follows the backend of the block's first unit; in the fused structure the 1x1
group and the pools use it too, and every other unit uses its own backend unless it is "auto"
(then the block's).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from .. import backends
from ..ops.amp import autocast_input
from ..ops.checks import conv_out_size
from ..ops.conv1x1_multi import Unit1x1, conv1x1_multi
from ..ops.conv_bn_relu import conv_bn_relu
from ..ops.grid_reduction import grid_reduction
from ..ops.max_pool_slice import max_pool3x3s2_into
from .conv_bn_relu import ConvBNReLU, count_batches, dispatch_key, timing_runner

CL = torch.channels_last


def _unit_backend(m: ConvBNReLU, backend: str) -> str:
    """A unit's backend in a block: the block's resolved one when the unit says "auto", else
    its own (a unit may be pinned, e.g. to cuDNN)."""
    return backend if m.backend == "auto" else m.backend


def _run(m: ConvBNReLU, x, backend, out=None, offset=0, defer=False):
    """One unit, optionally into out[:, offset:...]; x and defer as conv_bn_relu's."""
    a = m.bn_args()
    return conv_bn_relu(x, m.conv.weight, a["bn_weight"], a["bn_bias"], a["running_mean"],
                        a["running_var"], stride=_pair(m.conv.stride),
                        padding=_pair(m.conv.padding), eps=a["eps"], momentum=a["momentum"],
                        training=a["training"], out=out, out_offset=offset, defer=defer,
                        backend=_unit_backend(m, backend))


def _link(m: ConvBNReLU, x, backend, consumers):
    """m(x) for the units in `consumers` (all of its readers): when m and every consumer run
    on Triton, a DeferredActivation whose BN + ReLU they apply as they load it (nn/chain.py),
    else m's result."""
    defer = all(_unit_backend(u, backend) == "triton" for u in (m, *consumers))
    return _run(m, x, backend, defer=defer)


def _chain(units, x, backend, out, offset):
    """units in order, each reading the previous one's result, the last into out[:, offset:]
    (links deferred where both sides run on Triton: _link)."""
    for m, nxt in zip(units, units[1:]):
        x = _link(m, x, backend, [nxt])
    return _run(units[-1], x, backend, out, offset)


def _group(specs, x, backend, out):
    """The 1x1 units reading x as one op. specs: (unit, out_offset or None, pool?)."""
    units, modes = [], set()
    for m, off, pool in specs:
        a = m.bn_args()
        modes.add(a["training"])
        units.append(Unit1x1(m.conv.weight, a["bn_weight"], a["bn_bias"], a["running_mean"],
                             a["running_var"], a["eps"], a["momentum"], off, pool))
    if len(modes) != 1:
        raise ValueError("Inception block: its 1x1 units are in different train/eval modes; "
                         "call .train()/.eval() on the whole block")
    return conv1x1_multi(x, units, training=modes.pop(), out=out, backend=backend)


class _Join(torch.autograd.Function):
    """Ties the aliases of one block output (each written by one branch) into one tensor; the
    gradient goes to every writer as is (each reads its own channel slice, as a view)."""

    @staticmethod
    def forward(ctx, *parts):
        ctx.n = len(parts)
        return parts[0].view_as(parts[0])

    @staticmethod
    def backward(ctx, grad):
        return (grad,) * ctx.n


class _Output:
    """The block's one NHWC output, its channels laid out by branch width in torchvision's
    order (offsets[i] is where branch i starts); alias() hands each writer its own detached
    alias."""

    def __init__(self, x, widths, h, w):
        self.offsets = [sum(widths[:i]) for i in range(len(widths))]
        self.buf = torch.empty((x.shape[0], sum(widths), h, w), dtype=x.dtype, device=x.device,
                               memory_format=CL)
        self.parts = []

    def alias(self):
        a = self.buf.detach()
        self.parts.append(a)
        return a

    def result(self):
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parts):
            return _Join.apply(*self.parts)
        return self.buf


def _width(m: ConvBNReLU) -> int:
    return m.conv.out_channels


class InceptionBlock(nn.Module):
    """Base of the Inception blocks: chooses the structure per call (see the module doc)."""

    def _backend(self, x) -> str:
        backend = getattr(self, self._FIRST).backend  # follows Inception3.set_backend
        if backend != "auto" or x.device.type != "cuda":
            return backends.resolve(backend, x)
        train = self.training and torch.is_grad_enabled()
        return backends.resolve(backend, x, key=dispatch_key(type(self).__name__, x, train),
                                runner=lambda b: timing_runner(self, x, b, train))

    def forward(self, x):
        b = self._backend(x)
        if b == "torch":
            return self._forward_reference(x)
        # Under autocast the block input is cast once, so every slice of the one output has
        # its dtype. Every kernel call below is a registered op: torch.compile traces it all.
        count_batches(m for m in self.children() if isinstance(m, ConvBNReLU))
        return self._forward_fused(autocast_input(x), b)


class InceptionA(InceptionBlock):
    """35x35 block (Mixed_5b-d): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""

    _FIRST = "branch1x1"
    # The two-unit branch: its units' names and the second one's kernel (the paper's Figure 5
    # has a 3x3 there: paper_blocks.InceptionFig5).
    _MID, _MID_KERNEL = ("branch5x5_1", "branch5x5_2"), 5

    def __init__(self, in_channels: int, pool_features: int, backend: str = "auto"):
        super().__init__()
        conv = partial(ConvBNReLU, backend=backend)
        k = self._MID_KERNEL
        self.branch1x1 = conv(in_channels, 64, kernel_size=1)
        setattr(self, self._MID[0], conv(in_channels, 48, kernel_size=1))
        setattr(self, self._MID[1], conv(48, 64, kernel_size=k, padding=k // 2))
        self.branch3x3dbl_1 = conv(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = conv(in_channels, pool_features, kernel_size=1)

    def _forward_fused(self, x, b):
        mid_1, mid_2 = (getattr(self, n) for n in self._MID)
        out = _Output(x, [_width(m) for m in (self.branch1x1, mid_2, self.branch3x3dbl_3,
                                               self.branch_pool)], x.shape[2], x.shape[3])
        o = out.offsets
        _, t5, t3, _ = _group([(self.branch1x1, o[0], False), (mid_1, None, False),
                               (self.branch3x3dbl_1, None, False), (self.branch_pool, o[3], True)],
                              x, b, out.alias())
        _run(mid_2, t5, b, out.alias(), o[1])
        _chain([self.branch3x3dbl_2, self.branch3x3dbl_3], t3, b, out.alias(), o[2])
        return out.result()

    def _forward_reference(self, x):
        b1 = self.branch1x1(x)
        mid_1, mid_2 = (getattr(self, n) for n in self._MID)
        b5 = mid_2(mid_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class _GridReductionBlock(InceptionBlock):
    """Base of the grid reductions B and D: two conv towers, each ending in a 3x3/2 unit, next
    to a 3x3/2 max-pool of the block input: [tower 1 | tower 2 | pool] channels. A subclass
    names the towers' last units (_LAST) and gives their reference outputs (_towers)."""

    _LAST = ()

    def _output(self, x) -> _Output:
        c_in, h, w = x.shape[1:]
        widths = [_width(getattr(self, n)) for n in self._LAST] + [c_in]
        return _Output(x, widths, conv_out_size(h, 3, 2, 0), conv_out_size(w, 3, 2, 0))

    def _forward_reference(self, x):
        return torch.cat([*self._towers(x), F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionB(_GridReductionBlock):
    """Grid reduction 35->17 (Mixed_6a): 3x3/2 | 1x1->3x3->3x3/2 | maxpool 3x3/2."""

    _FIRST = "branch3x3"
    _LAST = ("branch3x3", "branch3x3dbl_3")

    def __init__(self, in_channels: int, backend: str = "auto"):
        super().__init__()
        conv = partial(ConvBNReLU, backend=backend)
        self.branch3x3 = conv(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = conv(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, kernel_size=3, stride=2)

    def _forward_fused(self, x, b):
        out = self._output(x)
        o = out.offsets
        if self.branch3x3.backend in ("auto", b):  # one kernel reads each 3x3/2 window once
            _grid_reduction(self.branch3x3, x, out.alias(), o[0], o[2], b)  # for conv and pool
        else:
            _run(self.branch3x3, x, b, out.alias(), o[0])
            max_pool3x3s2_into(x, out.alias(), o[2], backend=b)
        _chain([self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3], x, b,
               out.alias(), o[1])
        return out.result()

    def _towers(self, x):
        return (self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))))


class InceptionC(InceptionBlock):
    """17x17 block (Mixed_6b-e) with 1x7 / 7x1 factorized convolutions."""

    _FIRST = "branch1x1"

    def __init__(self, in_channels: int, channels_7x7: int, backend: str = "auto"):
        super().__init__()
        conv = partial(ConvBNReLU, backend=backend)
        c7 = channels_7x7
        self.branch1x1 = conv(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = conv(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = conv(in_channels, 192, kernel_size=1)

    def _forward_fused(self, x, b):
        out = _Output(x, [_width(m) for m in (self.branch1x1, self.branch7x7_3,
                                               self.branch7x7dbl_5, self.branch_pool)],
                      x.shape[2], x.shape[3])
        o = out.offsets
        _, t7, td, _ = _group([(self.branch1x1, o[0], False), (self.branch7x7_1, None, False),
                               (self.branch7x7dbl_1, None, False), (self.branch_pool, o[3], True)],
                              x, b, out.alias())
        _chain([self.branch7x7_2, self.branch7x7_3], t7, b, out.alias(), o[1])
        _chain([self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                self.branch7x7dbl_5], td, b, out.alias(), o[2])
        return out.result()

    def _forward_reference(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(_GridReductionBlock):
    """Grid reduction 17->8 (Mixed_7a): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool 3x3/2."""

    _FIRST = "branch3x3_1"
    _LAST = ("branch3x3_2", "branch7x7x3_4")

    def __init__(self, in_channels: int, backend: str = "auto"):
        super().__init__()
        conv = partial(ConvBNReLU, backend=backend)
        self.branch3x3_1 = conv(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = conv(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(192, 192, kernel_size=3, stride=2)

    def _forward_fused(self, x, b):
        out = self._output(x)
        o = out.offsets
        t3, t7 = _group([(self.branch3x3_1, None, False), (self.branch7x7x3_1, None, False)],
                        x, b, None)
        _run(self.branch3x3_2, t3, b, out.alias(), o[0])
        _chain([self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4], t7, b, out.alias(),
               o[1])
        _grid_reduction(None, x, out.alias(), 0, o[2], b)  # the pool slice
        return out.result()

    def _towers(self, x):
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        return (self.branch3x3_2(self.branch3x3_1(x)),
                self.branch7x7x3_4(self.branch7x7x3_3(b7)))


class InceptionE(InceptionBlock):
    """8x8 block (Mixed_7b-c), expanded filter bank: parallel 1x3 and 3x1."""

    _FIRST = "branch1x1"

    def __init__(self, in_channels: int, backend: str = "auto"):
        super().__init__()
        conv = partial(ConvBNReLU, backend=backend)
        self.branch1x1 = conv(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = conv(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = conv(in_channels, 192, kernel_size=1)

    def _forward_fused(self, x, b):
        out = _Output(x, [_width(m) for m in (self.branch1x1, self.branch3x3_2a,
                                               self.branch3x3_2b, self.branch3x3dbl_3a,
                                               self.branch3x3dbl_3b, self.branch_pool)],
                      x.shape[2], x.shape[3])
        o = out.offsets
        _, t3, td, _ = _group([(self.branch1x1, o[0], False), (self.branch3x3_1, None, False),
                               (self.branch3x3dbl_1, None, False), (self.branch_pool, o[5], True)],
                              x, b, out.alias())
        _run(self.branch3x3_2a, t3, b, out.alias(), o[1])
        _run(self.branch3x3_2b, t3, b, out.alias(), o[2])
        td = _link(self.branch3x3dbl_2, td, b, [self.branch3x3dbl_3a, self.branch3x3dbl_3b])
        _run(self.branch3x3dbl_3a, td, b, out.alias(), o[3])
        _run(self.branch3x3dbl_3b, td, b, out.alias(), o[4])
        return out.result()

    def _forward_reference(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


def _grid_reduction(m, x, out, conv_offset, pool_offset, backend):
    """The grid-reduction op (ops/grid_reduction.py): conv unit m (or None) + max-pool."""
    if m is None:
        return grid_reduction(x, None, None, None, None, None, out=out, pool_offset=pool_offset,
                              backend=backend)
    a = m.bn_args()
    return grid_reduction(x, m.conv.weight, a["bn_weight"], a["bn_bias"], a["running_mean"],
                          a["running_var"], out=out, conv_offset=conv_offset,
                          pool_offset=pool_offset, eps=a["eps"], momentum=a["momentum"],
                          training=a["training"], backend=backend)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: avgpool 5x5/3 -> 1x1 128 -> 5x5 768 -> fc."""

    def __init__(self, in_channels: int, num_classes: int, backend: str = "auto"):
        super().__init__()
        self.conv0 = ConvBNReLU(in_channels, 128, kernel_size=1, backend=backend)
        self.conv1 = ConvBNReLU(128, 768, kernel_size=5, backend=backend)
        self.conv1.stddev = 0.01  # as torchvision (set on the block, so its init does not see it)
        self.fc = nn.Linear(768, num_classes)
        self.fc.stddev = 0.001

    def forward(self, x):
        x = F.avg_pool2d(x, kernel_size=5, stride=3)
        x = self.conv1(self.conv0(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.fc(torch.flatten(x, 1))
