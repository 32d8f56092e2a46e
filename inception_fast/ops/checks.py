"""Input checks shared by every op: clear errors instead of a crash inside a kernel."""
from __future__ import annotations

import torch

from ..kernels.dtypes import check_conv_operands
from ..kernels.sizes import conv_out_size  # noqa: F401  (re-exported for the ops)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_conv_input(x: torch.Tensor, weight: torch.Tensor, what: str = "conv_bn_relu") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what}: input dtype must be one of float32/float16/bfloat16/float64, got {x.dtype}")
    check_conv_operands(x, weight, what, "input")


def check_out_slice(out: torch.Tensor, x_shape, c_out: int, offset: int, oh: int, ow: int,
                    dtype, device, what: str = "conv_bn_relu") -> None:
    """`out` is a caller-provided (N, C_total, OH, OW) tensor; channels [offset, offset+c_out)
    receive the result."""
    if out.dim() != 4:
        raise ValueError(f"{what}: out must be 4-D, got shape {tuple(out.shape)}")
    n = x_shape[0]
    if out.shape[0] != n or out.shape[2] != oh or out.shape[3] != ow:
        raise ValueError(f"{what}: out has shape {tuple(out.shape)}, expected ({n}, C_total, {oh}, {ow})")
    if offset < 0 or offset + c_out > out.shape[1]:
        raise ValueError(f"{what}: channel slice [{offset}, {offset + c_out}) does not fit in out with "
                         f"{out.shape[1]} channels")
    if out.dtype != dtype:
        raise TypeError(f"{what}: out dtype {out.dtype} differs from the result dtype {dtype}")
    if out.device != device:
        raise ValueError(f"{what}: out is on {out.device}, the input on {device}")

