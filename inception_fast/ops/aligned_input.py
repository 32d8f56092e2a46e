"""The input and weight of a conv as the Triton kernels take them: the input in the autocast
dtype and, with fewer than ALIGN_C channels, zero-padded to ALIGN_C (channels_last), and the
weight zero-padded to match.

Why: an NHWC pixel of 3 bf16 channels (the RGB image) is 6 bytes, so the stem conv's forward
and weight-gradient kernels could only load it 2 bytes at a time; 8 channels are 16 bytes, one
cp.async per pixel and tap. The padding is written in the pass that casts the image
(kernels/pad_channels.py: read the fp32 batch once, write 16 bytes a pixel); the padded
channels meet zero weight rows and add nothing. It costs 10 bytes a pixel more to write and to
read twice (0.7 GB of a 299 / batch-256 bf16 training step, counted by the static report), and
the padded image is what the stem conv keeps for its weight gradient (+10 bytes a pixel held:
about 230 MB at that size)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .amp import autocast_dtype, autocast_input
from .library import name
from .param_cache import ParamCache, version_key
from ..kernels.pad_channels import cast_pad_channels

CL = torch.channels_last
# conv weight -> the weight zero-padded to the padded input's channels (module doc).
ALIGN_CACHE = ParamCache("aligned_input.weight")
ALIGN_C = 8


@torch.library.custom_op(name("cast_pad_channels"), mutates_args=())
def cast_pad_channels_op(x: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    """x zero-padded to `channels` channels, channels_last, in `dtype`: the cast and the padding
    in one pass (kernels/pad_channels.py). Differentiable: the gradient is the first C
    channels'."""
    return cast_pad_channels(x, channels, dtype)


@cast_pad_channels_op.register_fake
def _(x, channels, dtype):
    return torch.empty((x.shape[0], channels, *x.shape[2:]), device=x.device, dtype=dtype,
                       memory_format=CL)


def _cast_pad_setup(ctx, inputs, output):
    ctx.c, ctx.dtype = inputs[0].shape[1], inputs[0].dtype


def _cast_pad_backward(ctx, grad):
    return grad[:, :ctx.c].to(ctx.dtype), None, None


cast_pad_channels_op.register_autograd(_cast_pad_backward, setup_context=_cast_pad_setup)


def kernel_input(x, in_bn, pool_offset):
    """x as the kernels take it: in the autocast dtype, and zero-padded to ALIGN_C channels
    (channels_last) when it has fewer (module doc); one copy either way. Differentiable."""
    c = x.shape[1]
    if c >= ALIGN_C or in_bn is not None or pool_offset is not None:
        return autocast_input(x)
    return cast_pad_channels_op(x, ALIGN_C, autocast_dtype(x) or x.dtype)


def kernel_weight(weight, c_in):
    """The conv weight for a kernel input of c_in channels: itself, or (an input kernel_input
    padded to ALIGN_C) zero-padded along C_in, cached per weight version."""
    pad = c_in - weight.shape[1]
    if pad == 0:
        return weight
    if c_in != ALIGN_C or pad < 0:
        raise ValueError(f"conv_bn_relu(backend='triton'): input has {c_in} channels but the "
                         f"weight expects {weight.shape[1]}")
    key = version_key(weight)
    key = None if key is None else key + (c_in,)
    return ALIGN_CACHE.get(weight, key, lambda: F.pad(weight.detach(), (0, 0, 0, 0, 0, pad)))
