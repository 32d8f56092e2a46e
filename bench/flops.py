"""Convolution FLOPs of a whole network, counted from the shapes of one forward on the meta
device (no memory, no compute). For torchvision's inception_v3 at 299x299 in train mode this
is the layer table's total (bench/test_layer_table.py checks it)."""
from __future__ import annotations

import torch
from torch import nn


def _conv_flops(conv: nn.Conv2d, out_shape) -> int:
    n, c_out, oh, ow = out_shape
    kh, kw = conv.kernel_size
    return 2 * n * c_out * oh * ow * (conv.in_channels // conv.groups) * kh * kw


def count_conv_flops(build, hw: tuple[int, int], train: bool, channels: int = 3) -> float:
    """Forward FLOPs (2 x MACs) per image of every convolution of `build()` on an
    (N, channels, *hw) input (counted at N = 2: BN in training needs more than one value).

    Counts nn.Conv2d calls, and also modules that own a `conv` (nn.Conv2d) but compute it
    without calling it (inception_fast's fused ConvBNReLU), each exactly once."""
    with torch.device("meta"):
        model = build()
    model.train(train)
    total = 0
    fired: dict[int, bool] = {}
    handles = []

    def on_conv(mod, args, out):
        nonlocal total
        total += _conv_flops(mod, out.shape)
        fired[id(mod)] = True

    def before_wrapper(mod, args):
        fired[id(mod.conv)] = False

    def after_wrapper(mod, args, out):
        nonlocal total
        if not fired.get(id(mod.conv), False):
            total += _conv_flops(mod.conv, out.shape)

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(getattr(m, "conv", None), nn.Conv2d):
            handles.append(m.register_forward_pre_hook(before_wrapper))
            handles.append(m.register_forward_hook(after_wrapper))
    try:
        with torch.no_grad():
            model(torch.empty((2, channels, *hw), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total / 2
