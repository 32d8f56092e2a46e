"""Output sizes of convolutions and pools: the one home of the formula (kernels, ops, nn and
models all import it). Pure Python, no torch or triton."""
from __future__ import annotations


def conv_out_size(size: int, k: int, stride: int = 1, pad: int = 0) -> int:
    """Output length of a conv / pool of kernel k along an axis of `size` (dilation 1)."""
    return (size + 2 * pad - k) // stride + 1


def conv_out_shape(x_shape, w_shape, stride, padding) -> tuple[int, int, int, int]:
    """(N, C_out, OH, OW) of conv2d(x, w) for x (N, C_in, H, W) and w (C_out, C_in, kh, kw)."""
    return (x_shape[0], w_shape[0], conv_out_size(x_shape[2], w_shape[2], stride[0], padding[0]),
            conv_out_size(x_shape[3], w_shape[3], stride[1], padding[1]))


def pool3x3s2_out_hw(h: int, w: int) -> tuple[int, int]:
    """(OH, OW) of the unpadded 3x3 / stride-2 window of the grid reductions."""
    return conv_out_size(h, 3, 2), conv_out_size(w, 3, 2)


def row_align(*strides: int, cap: int = 16) -> int:
    """The largest power of two (at most `cap`) that divides every row stride: passed to a
    kernel as a tl.multiple_of hint on its row offsets. Triton only marks ints divisible by 16
    on its own, so rows of 1000 classes would otherwise load 2 bytes at a time."""
    a = cap
    for s in strides:
        while a > 1 and s % a:
            a //= 2
    return a
