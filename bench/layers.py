"""Inception-v3's convolution layers as data: the table of docs/inception_v3_layers.md
(torchvision's layout, train mode with the aux head, 299x299 input) in Python.
bench/test_layer_table.py checks it against torchvision's model, so a typo here fails a test.

FLOPs are 2 x multiply-adds; a training step (fwd + bwd) counts 3 x the forward."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Layer:
    name: str  # torchvision module name without the trailing ".conv"
    c_in: int
    h: int
    w: int
    c_out: int
    oh: int
    ow: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    gflop: float  # per image, forward, as printed in the table (3 decimals)

    @property
    def config(self) -> tuple:
        """What makes two layers the same benchmark: shapes, kernel, stride, padding."""
        return (self.c_in, self.h, self.w, self.c_out, self.kernel, self.stride, self.padding)

    def flops(self, batch: int = 1) -> int:
        """Forward FLOPs of this shape for `batch` images, from the shape itself."""
        return 2 * batch * self.c_out * self.oh * self.ow * self.c_in * self.kernel[0] * self.kernel[1]

    def shrunk(self, c_max: int, hw_max: int) -> "Layer":
        """The same kernel/stride/padding on at most c_max channels and hw_max pixels a side
        (CPU smoke runs); the input is kept at least as large as the kernel."""
        h = max(min(self.h, hw_max), self.kernel[0])
        w = max(min(self.w, hw_max), self.kernel[1])
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        lay = replace(self, c_in=min(self.c_in, c_max), c_out=min(self.c_out, c_max), h=h, w=w,
                      oh=oh, ow=ow)
        return replace(lay, gflop=lay.flops() / 1e9)

    def describe(self) -> str:
        k, s, p = self.kernel, self.stride, self.padding
        return (f"{self.c_in}x{self.h}x{self.w} -> {self.c_out}x{self.oh}x{self.ow}, "
                f"{k[0]}x{k[1]}/{s[0]} pad {p[0]},{p[1]}")


def _L(name, c_in, h, w, c_out, oh, ow, kh, kw, s, ph, pw, gflop) -> Layer:
    return Layer(name, c_in, h, w, c_out, oh, ow, (kh, kw), (s, s), (ph, pw), gflop)


# name, C_in, H, W, C_out, OH, OW, kh, kw, stride, pad_h, pad_w, GFLOP/img fwd
LAYERS: tuple[Layer, ...] = tuple(_L(*r) for r in (
    ("Conv2d_1a_3x3", 3, 299, 299, 32, 149, 149, 3, 3, 2, 0, 0, 0.038),
    ("Conv2d_2a_3x3", 32, 149, 149, 32, 147, 147, 3, 3, 1, 0, 0, 0.398),
    ("Conv2d_2b_3x3", 32, 147, 147, 64, 147, 147, 3, 3, 1, 1, 1, 0.797),
    ("Conv2d_3b_1x1", 64, 73, 73, 80, 73, 73, 1, 1, 1, 0, 0, 0.055),
    ("Conv2d_4a_3x3", 80, 73, 73, 192, 71, 71, 3, 3, 1, 0, 0, 1.394),
    ("Mixed_5b.branch1x1", 192, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.030),
    ("Mixed_5b.branch5x5_1", 192, 35, 35, 48, 35, 35, 1, 1, 1, 0, 0, 0.023),
    ("Mixed_5b.branch5x5_2", 48, 35, 35, 64, 35, 35, 5, 5, 1, 2, 2, 0.188),
    ("Mixed_5b.branch3x3dbl_1", 192, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.030),
    ("Mixed_5b.branch3x3dbl_2", 64, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.135),
    ("Mixed_5b.branch3x3dbl_3", 96, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.203),
    ("Mixed_5b.branch_pool", 192, 35, 35, 32, 35, 35, 1, 1, 1, 0, 0, 0.015),
    ("Mixed_5c.branch1x1", 256, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.040),
    ("Mixed_5c.branch5x5_1", 256, 35, 35, 48, 35, 35, 1, 1, 1, 0, 0, 0.030),
    ("Mixed_5c.branch5x5_2", 48, 35, 35, 64, 35, 35, 5, 5, 1, 2, 2, 0.188),
    ("Mixed_5c.branch3x3dbl_1", 256, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.040),
    ("Mixed_5c.branch3x3dbl_2", 64, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.135),
    ("Mixed_5c.branch3x3dbl_3", 96, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.203),
    ("Mixed_5c.branch_pool", 256, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.040),
    ("Mixed_5d.branch1x1", 288, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.045),
    ("Mixed_5d.branch5x5_1", 288, 35, 35, 48, 35, 35, 1, 1, 1, 0, 0, 0.034),
    ("Mixed_5d.branch5x5_2", 48, 35, 35, 64, 35, 35, 5, 5, 1, 2, 2, 0.188),
    ("Mixed_5d.branch3x3dbl_1", 288, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.045),
    ("Mixed_5d.branch3x3dbl_2", 64, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.135),
    ("Mixed_5d.branch3x3dbl_3", 96, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.203),
    ("Mixed_5d.branch_pool", 288, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.045),
    ("Mixed_6a.branch3x3", 288, 35, 35, 384, 17, 17, 3, 3, 2, 0, 0, 0.575),
    ("Mixed_6a.branch3x3dbl_1", 288, 35, 35, 64, 35, 35, 1, 1, 1, 0, 0, 0.045),
    ("Mixed_6a.branch3x3dbl_2", 64, 35, 35, 96, 35, 35, 3, 3, 1, 1, 1, 0.135),
    ("Mixed_6a.branch3x3dbl_3", 96, 35, 35, 96, 17, 17, 3, 3, 2, 0, 0, 0.048),
    ("Mixed_6b.branch1x1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6b.branch7x7_1", 768, 17, 17, 128, 17, 17, 1, 1, 1, 0, 0, 0.057),
    ("Mixed_6b.branch7x7_2", 128, 17, 17, 128, 17, 17, 1, 7, 1, 0, 3, 0.066),
    ("Mixed_6b.branch7x7_3", 128, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.099),
    ("Mixed_6b.branch7x7dbl_1", 768, 17, 17, 128, 17, 17, 1, 1, 1, 0, 0, 0.057),
    ("Mixed_6b.branch7x7dbl_2", 128, 17, 17, 128, 17, 17, 7, 1, 1, 3, 0, 0.066),
    ("Mixed_6b.branch7x7dbl_3", 128, 17, 17, 128, 17, 17, 1, 7, 1, 0, 3, 0.066),
    ("Mixed_6b.branch7x7dbl_4", 128, 17, 17, 128, 17, 17, 7, 1, 1, 3, 0, 0.066),
    ("Mixed_6b.branch7x7dbl_5", 128, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.099),
    ("Mixed_6b.branch_pool", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6c.branch1x1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6c.branch7x7_1", 768, 17, 17, 160, 17, 17, 1, 1, 1, 0, 0, 0.071),
    ("Mixed_6c.branch7x7_2", 160, 17, 17, 160, 17, 17, 1, 7, 1, 0, 3, 0.104),
    ("Mixed_6c.branch7x7_3", 160, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.124),
    ("Mixed_6c.branch7x7dbl_1", 768, 17, 17, 160, 17, 17, 1, 1, 1, 0, 0, 0.071),
    ("Mixed_6c.branch7x7dbl_2", 160, 17, 17, 160, 17, 17, 7, 1, 1, 3, 0, 0.104),
    ("Mixed_6c.branch7x7dbl_3", 160, 17, 17, 160, 17, 17, 1, 7, 1, 0, 3, 0.104),
    ("Mixed_6c.branch7x7dbl_4", 160, 17, 17, 160, 17, 17, 7, 1, 1, 3, 0, 0.104),
    ("Mixed_6c.branch7x7dbl_5", 160, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.124),
    ("Mixed_6c.branch_pool", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6d.branch1x1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6d.branch7x7_1", 768, 17, 17, 160, 17, 17, 1, 1, 1, 0, 0, 0.071),
    ("Mixed_6d.branch7x7_2", 160, 17, 17, 160, 17, 17, 1, 7, 1, 0, 3, 0.104),
    ("Mixed_6d.branch7x7_3", 160, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.124),
    ("Mixed_6d.branch7x7dbl_1", 768, 17, 17, 160, 17, 17, 1, 1, 1, 0, 0, 0.071),
    ("Mixed_6d.branch7x7dbl_2", 160, 17, 17, 160, 17, 17, 7, 1, 1, 3, 0, 0.104),
    ("Mixed_6d.branch7x7dbl_3", 160, 17, 17, 160, 17, 17, 1, 7, 1, 0, 3, 0.104),
    ("Mixed_6d.branch7x7dbl_4", 160, 17, 17, 160, 17, 17, 7, 1, 1, 3, 0, 0.104),
    ("Mixed_6d.branch7x7dbl_5", 160, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.124),
    ("Mixed_6d.branch_pool", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6e.branch1x1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6e.branch7x7_1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6e.branch7x7_2", 192, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.149),
    ("Mixed_6e.branch7x7_3", 192, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.149),
    ("Mixed_6e.branch7x7dbl_1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_6e.branch7x7dbl_2", 192, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.149),
    ("Mixed_6e.branch7x7dbl_3", 192, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.149),
    ("Mixed_6e.branch7x7dbl_4", 192, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.149),
    ("Mixed_6e.branch7x7dbl_5", 192, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.149),
    ("Mixed_6e.branch_pool", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("AuxLogits.conv0", 768, 5, 5, 128, 5, 5, 1, 1, 1, 0, 0, 0.005),
    ("AuxLogits.conv1", 128, 5, 5, 768, 1, 1, 5, 5, 1, 0, 0, 0.005),
    ("Mixed_7a.branch3x3_1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_7a.branch3x3_2", 192, 17, 17, 320, 8, 8, 3, 3, 2, 0, 0, 0.071),
    ("Mixed_7a.branch7x7x3_1", 768, 17, 17, 192, 17, 17, 1, 1, 1, 0, 0, 0.085),
    ("Mixed_7a.branch7x7x3_2", 192, 17, 17, 192, 17, 17, 1, 7, 1, 0, 3, 0.149),
    ("Mixed_7a.branch7x7x3_3", 192, 17, 17, 192, 17, 17, 7, 1, 1, 3, 0, 0.149),
    ("Mixed_7a.branch7x7x3_4", 192, 17, 17, 192, 8, 8, 3, 3, 2, 0, 0, 0.042),
    ("Mixed_7b.branch1x1", 1280, 8, 8, 320, 8, 8, 1, 1, 1, 0, 0, 0.052),
    ("Mixed_7b.branch3x3_1", 1280, 8, 8, 384, 8, 8, 1, 1, 1, 0, 0, 0.063),
    ("Mixed_7b.branch3x3_2a", 384, 8, 8, 384, 8, 8, 1, 3, 1, 0, 1, 0.057),
    ("Mixed_7b.branch3x3_2b", 384, 8, 8, 384, 8, 8, 3, 1, 1, 1, 0, 0.057),
    ("Mixed_7b.branch3x3dbl_1", 1280, 8, 8, 448, 8, 8, 1, 1, 1, 0, 0, 0.073),
    ("Mixed_7b.branch3x3dbl_2", 448, 8, 8, 384, 8, 8, 3, 3, 1, 1, 1, 0.198),
    ("Mixed_7b.branch3x3dbl_3a", 384, 8, 8, 384, 8, 8, 1, 3, 1, 0, 1, 0.057),
    ("Mixed_7b.branch3x3dbl_3b", 384, 8, 8, 384, 8, 8, 3, 1, 1, 1, 0, 0.057),
    ("Mixed_7b.branch_pool", 1280, 8, 8, 192, 8, 8, 1, 1, 1, 0, 0, 0.031),
    ("Mixed_7c.branch1x1", 2048, 8, 8, 320, 8, 8, 1, 1, 1, 0, 0, 0.084),
    ("Mixed_7c.branch3x3_1", 2048, 8, 8, 384, 8, 8, 1, 1, 1, 0, 0, 0.101),
    ("Mixed_7c.branch3x3_2a", 384, 8, 8, 384, 8, 8, 1, 3, 1, 0, 1, 0.057),
    ("Mixed_7c.branch3x3_2b", 384, 8, 8, 384, 8, 8, 3, 1, 1, 1, 0, 0.057),
    ("Mixed_7c.branch3x3dbl_1", 2048, 8, 8, 448, 8, 8, 1, 1, 1, 0, 0, 0.117),
    ("Mixed_7c.branch3x3dbl_2", 448, 8, 8, 384, 8, 8, 3, 3, 1, 1, 1, 0.198),
    ("Mixed_7c.branch3x3dbl_3a", 384, 8, 8, 384, 8, 8, 1, 3, 1, 0, 1, 0.057),
    ("Mixed_7c.branch3x3dbl_3b", 384, 8, 8, 384, 8, 8, 3, 1, 1, 1, 0, 0.057),
    ("Mixed_7c.branch_pool", 2048, 8, 8, 192, 8, 8, 1, 1, 1, 0, 0, 0.050),
))

TOTAL_GFLOP = 11.43  # the table's total, main + aux, per 299x299 image, forward


def distinct_layers(layers=LAYERS) -> list[tuple[Layer, tuple[str, ...]]]:
    """One entry per distinct conv configuration, in table order: (first layer of that
    configuration, names of every layer that shares it)."""
    seen: dict[tuple, list] = {}
    for lay in layers:
        seen.setdefault(lay.config, [lay, []])[1].append(lay.name)
    return [(first, tuple(names)) for first, names in seen.values()]


def by_name(name: str) -> Layer:
    for lay in LAYERS:
        if lay.name == name:
            return lay
    raise KeyError(f"no layer {name!r} in the Inception-v3 layer table")


# Representative layers for the compact GPU run: one of each kernel shape and grid.
COMPACT_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2b_3x3", "Conv2d_4a_3x3",
    "Mixed_5b.branch1x1", "Mixed_5b.branch5x5_2", "Mixed_5b.branch3x3dbl_3",
    "Mixed_6a.branch3x3", "Mixed_6e.branch1x1", "Mixed_6e.branch7x7_2", "Mixed_6e.branch7x7_3",
    "Mixed_7b.branch3x3_2a", "Mixed_7b.branch3x3dbl_2", "Mixed_7c.branch3x3dbl_1",
)
# CPU smoke: a handful of kernel shapes (3-channel stem at stride 2, 1x1, 3x3, 1x7, 3x1).
SMOKE_LAYERS = (
    "Conv2d_1a_3x3", "Mixed_5b.branch1x1", "Mixed_5b.branch3x3dbl_2", "Mixed_6b.branch7x7_2",
    "Mixed_7b.branch3x3_2b",
)

# The Mixed blocks (torchvision names) -> (nn class name, constructor kwargs, input C, H=W).
BLOCKS = {
    "Mixed_5b": ("InceptionA", dict(in_channels=192, pool_features=32), 192, 35),
    "Mixed_5c": ("InceptionA", dict(in_channels=256, pool_features=64), 256, 35),
    "Mixed_5d": ("InceptionA", dict(in_channels=288, pool_features=64), 288, 35),
    "Mixed_6a": ("InceptionB", dict(in_channels=288), 288, 35),
    "Mixed_6b": ("InceptionC", dict(in_channels=768, channels_7x7=128), 768, 17),
    "Mixed_6c": ("InceptionC", dict(in_channels=768, channels_7x7=160), 768, 17),
    "Mixed_6d": ("InceptionC", dict(in_channels=768, channels_7x7=160), 768, 17),
    "Mixed_6e": ("InceptionC", dict(in_channels=768, channels_7x7=192), 768, 17),
    "Mixed_7a": ("InceptionD", dict(in_channels=768), 768, 17),
    "Mixed_7b": ("InceptionE", dict(in_channels=1280), 1280, 8),
    "Mixed_7c": ("InceptionE", dict(in_channels=2048), 2048, 8),
}
COMPACT_BLOCKS = ("Mixed_5b", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7c")
SMOKE_BLOCKS = ("Mixed_5b", "Mixed_6a", "Mixed_6b", "Mixed_7a", "Mixed_7b")


def block_gflop(block: str) -> float:
    """Forward GFLOP per 299x299 image of a Mixed block's convolutions, from the table."""
    return sum(lay.gflop for lay in LAYERS if lay.name.startswith(block + "."))
