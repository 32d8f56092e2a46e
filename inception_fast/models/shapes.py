"""Spatial sizes through Inception-v3's stem and grid reductions, and the smallest inputs
each variant accepts (computed, not tabulated, so they stay true to the layers)."""
from __future__ import annotations

import functools

from ..kernels.sizes import conv_out_size


def _conv(s: int, k: int = 3, stride: int = 1, pad: int = 0) -> int:
    return conv_out_size(s, k, stride, pad)


def grid_sizes(size: int, input_size: int = 299) -> dict[str, int]:
    """Side of the feature map after each stage for a side-`size` input, for the variant
    `input_size` (299: stride-2 first conv; 151: stride 1; 79: stride 1 and no first max-pool)."""
    s = _conv(size, 3, 2 if input_size == 299 else 1)  # Conv2d_1a_3x3
    s = _conv(s)  # Conv2d_2a_3x3
    stem = s  # Conv2d_2b_3x3 keeps it (pad 1)
    if input_size != 79:
        s = _conv(s, 3, 2)  # maxpool1
    s = _conv(s)  # Conv2d_4a_3x3
    g35 = _conv(s, 3, 2)  # maxpool2 -> Mixed_5x
    g17 = _conv(g35, 3, 2)  # Mixed_6a
    g8 = _conv(g17, 3, 2)  # Mixed_7a
    aux = _conv(g17, 5, 3)  # AuxLogits avg_pool 5x5/3, then a 5x5 conv needs aux >= 5
    return {"stem": stem, "grid35": g35, "grid17": g17, "grid8": g8, "aux_pool": aux}


def _fits(size: int, input_size: int, aux: bool) -> bool:
    g = grid_sizes(size, input_size)
    return g["stem"] >= 1 and g["grid8"] >= 1 and (not aux or g["aux_pool"] >= 5)


@functools.lru_cache(maxsize=None)
def min_input_size(input_size: int = 299, aux: bool = False) -> int:
    """Smallest side accepted (the sizes only grow monotonically with the input)."""
    return next(s for s in range(1, 4096) if _fits(s, input_size, aux))


def check_input_size(hw: tuple[int, int], input_size: int = 299, aux: bool = False,
                     what: str = "inception_v3") -> None:
    h, w = hw
    lo = min_input_size(input_size, False)
    if h < lo or w < lo:
        raise ValueError(f"input of {h}x{w} is too small for {what} (input_size={input_size} "
                         f"variant): H and W must be at least {lo}")
    lo_aux = min_input_size(input_size, True)
    if aux and (h < lo_aux or w < lo_aux):
        raise ValueError(
            f"input of {h}x{w} is too small for the auxiliary classifier in training: the "
            f"input_size={input_size} variant needs at least {lo_aux}x{lo_aux} for it "
            f"(pass aux_logits=False, or use a larger input or a low-resolution variant)")
