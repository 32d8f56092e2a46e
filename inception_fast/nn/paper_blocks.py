"""The blocks of the paper's own Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception
Architecture", Table 1), where they differ from torchvision's layout, built from ConvBNReLU.

- InceptionFig5: the 35x35 module of Figure 5 (the 5x5 of the original module replaced by two
  3x3s; the plain 3x3 branch stays): 1x1 | 1x1->3x3 | 1x1->3x3->3x3 | avgpool->1x1.
- InceptionFig6: the 17x17 module of Figure 6 with n = 7, towers in the figure's order
  (1xn first, then nx1; torchvision's double tower starts with 7x1).
- InceptionReduction: the grid reduction of Figure 10 (both conv towers end in a 3x3/2 conv,
  next to a 3x3/2 max-pool of the block input); used for 35->17 and 17->8. Its pool slice is
  written by the grid-reduction op (ops/grid_reduction.py).
- InceptionAuxBN: the "BN-auxiliary" classifier (section 7): the auxiliary head whose fully
  connected layer is batch-normalized too, not only its convolutions.
The 8x8 module of Figure 7 is torchvision's InceptionE (identical) and is reused from blocks.py.

Figures 5 and 6 are InceptionA / InceptionC with their own units, so they share those blocks'
forward (blocks.py): on the fused backends one
output buffer whose slices the branches write, the 1x1 units reading the block input as one
GEMM, and the pool branch's 1x1 conv inside that GEMM with its average pool after it (the
pooling branches are average pools, 3x3, stride 1, pad 1, padding counted, as in torchvision,
so the pool commutes with the bias-free 1x1 conv); on "torch" the plain torch.cat structure.
The grid reduction allocates its output once (in the input's memory format) and its convs
write their slices through ConvBNReLU's `out=`.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.amp import autocast_dtype, autocast_input
from ..ops.checks import conv_out_size
from ..ops.grid_reduction import grid_reduction
from .blocks import InceptionA, InceptionC
from .conv_bn_relu import ConvBNReLU


def block_output(x: torch.Tensor, channels: int, h: int, w: int) -> torch.Tensor:
    """The one output tensor of a block, in x's memory format (NHWC slices stay NHWC) and in
    the dtype the convs produce (autocast's, when it is on)."""
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    return torch.empty((x.shape[0], channels, h, w), dtype=autocast_dtype(x) or x.dtype,
                       device=x.device, memory_format=fmt)


class InceptionFig5(InceptionA):
    """35x35 module (Figure 5): 1x1 64 | 1x1 48->3x3 64 | 1x1 64->3x3 96->3x3 96 |
    avgpool->1x1 64. 288 channels out. InceptionA's forward (fused and reference) with the
    middle branch a 3x3 (branch3x3_1/2) instead of torchvision's 5x5."""

    out_channels = 64 + 64 + 96 + 64
    _MID, _MID_KERNEL = ("branch3x3_1", "branch3x3_2"), 3

    def __init__(self, in_channels: int, backend: str = "auto"):
        super().__init__(in_channels, pool_features=64, backend=backend)


class InceptionFig6(InceptionC):
    """17x17 module (Figure 6, n = 7): 1x1 192 | 1x1 c7->1x7 c7->7x1 192 |
    1x1 c7->1x7->7x1->1x7 c7->7x1 192 | avgpool->1x1 192. 768 channels out. InceptionC with
    the double tower in the figure's order (1xn first; torchvision's starts with 7x1)."""

    out_channels = 4 * 192

    def __init__(self, in_channels: int, channels_7x7: int, backend: str = "auto"):
        super().__init__(in_channels, channels_7x7, backend=backend)
        conv = partial(ConvBNReLU, backend=backend)
        c7 = channels_7x7
        row = dict(kernel_size=(1, 7), padding=(0, 3))  # 1xn
        col = dict(kernel_size=(7, 1), padding=(3, 0))  # nx1
        # Replaced in place: same names and registration order as InceptionC's.
        self.branch7x7dbl_2 = conv(c7, c7, **row)
        self.branch7x7dbl_3 = conv(c7, c7, **col)
        self.branch7x7dbl_4 = conv(c7, c7, **row)
        self.branch7x7dbl_5 = conv(c7, 192, **col)


class InceptionReduction(nn.Module):
    """Grid reduction (Figure 10): 1x1->3x3/2 | 1x1->3x3->3x3/2 | maxpool 3x3/2, concatenated.
    Unpadded stride-2 windows: 35 -> 17 and 17 -> 8 as in Table 1.

    35->17 (Mixed_6a): (288, 256, 384, 64, 96) -> 384 + 96 + 288 = 768 channels.
    17->8 (Mixed_7a): (768, 192, 320, 128, 192) -> 320 + 192 + 768 = 1280 channels.
    """

    def __init__(self, in_channels: int, ch3x3_1: int, ch3x3: int, ch3x3dbl_1: int,
                 ch3x3dbl: int, backend: str = "auto"):
        super().__init__()
        conv = partial(ConvBNReLU, backend=backend)
        self.branch3x3_1 = conv(in_channels, ch3x3_1, kernel_size=1)
        self.branch3x3_2 = conv(ch3x3_1, ch3x3, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = conv(in_channels, ch3x3dbl_1, kernel_size=1)
        self.branch3x3dbl_2 = conv(ch3x3dbl_1, ch3x3dbl, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv(ch3x3dbl, ch3x3dbl, kernel_size=3, stride=2)
        self.out_channels = ch3x3 + ch3x3dbl + in_channels

    def forward(self, x):
        x = autocast_input(x)  # the max-pool slice is written in the convs' dtype
        oh, ow = conv_out_size(x.shape[2], 3, 2, 0), conv_out_size(x.shape[3], 3, 2, 0)
        out = block_output(x, self.out_channels, oh, ow)
        c3 = self.branch3x3_2.conv.out_channels
        cd = self.branch3x3dbl_3.conv.out_channels
        self.branch3x3_2(self.branch3x3_1(x), out=out, out_offset=0)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        self.branch3x3dbl_3(bd, out=out, out_offset=c3)
        # Both stride-2 convs read intermediates (unlike torchvision's Mixed_6a), so the
        # grid-reduction op writes the max-pool slice only (as for torchvision's Mixed_7a).
        grid_reduction(x, None, None, None, None, None, out=out, pool_offset=c3 + cd,
                       backend=self.branch3x3_2.backend)
        return out


class InceptionAuxBN(nn.Module):
    """The BN-auxiliary classifier on the last 17x17 module: avgpool 5x5/3 -> 1x1 128 ->
    5x5 768 -> FC -> BatchNorm1d = logits.

    Reading of the paper ("the fully connected layer of the auxiliary classifier is also
    batch-normalized, not just the convolutions"): the FC is batch-normalized exactly as the
    conv units are (Ioffe & Szegedy): Linear without bias, then BatchNorm1d (eps 1e-3, affine;
    its beta is the bias). No ReLU: its outputs are the logits.
    """

    def __init__(self, in_channels: int, num_classes: int, backend: str = "auto"):
        super().__init__()
        self.conv0 = ConvBNReLU(in_channels, 128, kernel_size=1, backend=backend)
        self.conv1 = ConvBNReLU(128, 768, kernel_size=5, backend=backend)
        self.conv1.stddev = 0.01  # init as torchvision's aux head
        self.fc = nn.Linear(768, num_classes, bias=False)
        self.fc.stddev = 0.001
        self.bn = nn.BatchNorm1d(num_classes, eps=1e-3)

    def forward(self, x):
        x = F.avg_pool2d(x, kernel_size=5, stride=3)
        x = self.conv1(self.conv0(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.bn(self.fc(torch.flatten(x, 1)))
