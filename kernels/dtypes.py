"""The dtypes (and operands) the Triton kernels take, checked in one place with one message.

bfloat16 runs on a GPU, but the Triton interpreter's tl.dot gets it wrong (numpy has no
bfloat16; with Triton 3.8 a 16x16 bf16 tile product came out off by 2e10, a 1x7 conv's weight
gradient at 1e14), so the GEMM kernels refuse a bf16 CPU tensor with a clear error instead of
computing garbage. Kernels without tl.dot (pools, BN) compute bf16 correctly there."""
from __future__ import annotations

import os

import torch

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_runnable(t: torch.Tensor, what: str, name: str) -> None:
    """ValueError unless a Triton kernel can run on t's device here."""
    if t.device.type != "cuda" and not (interpreter_on() and t.device.type == "cpu"):
        raise ValueError(f"{what}: {name} is on {t.device}; Triton kernels need a CUDA tensor "
                         "(or a CPU tensor with TRITON_INTERPRET=1 set before triton is imported)")


def check_kernel_dtype(t: torch.Tensor, what: str, name: str = "x", *,
                       gemm: bool = True) -> None:
    """TypeError naming the tensor unless the Triton kernels can compute in its dtype here
    (`gemm`: the kernel multiplies tiles with tl.dot)."""
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{what}: {name} dtype must be float32, float16 or bfloat16, got {t.dtype}")
    if gemm and t.dtype == torch.bfloat16 and t.device.type == "cpu" and interpreter_on():
        raise TypeError(f"{what}: {name} is bfloat16 on CPU, where the Triton interpreter's "
                        "tl.dot gives wrong results for bfloat16: use float16 or float32 on CPU, "
                        "or a GPU")


def check_conv_operands(x: torch.Tensor, weight: torch.Tensor, what: str,
                        x_name: str = "x") -> None:
    """ValueError unless x (N, C, H, W) and a conv weight (C_out, C, kh, kw) fit together:
    4-D both, the same channels, the same device."""
    if x.dim() != 4:
        raise ValueError(f"{what}: {x_name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{what}: weight must be 4-D (C_out, C_in, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"{what}: {x_name} has {x.shape[1]} channels but the weight expects "
                         f"{weight.shape[1]}")
    if x.device != weight.device:
        raise ValueError(f"{what}: {x_name} is on {x.device} but the weight on {weight.device}")


def check_bn_vectors(vectors, x: torch.Tensor, what: str, name: str = "in_bn") -> None:
    """ValueError unless `vectors` is None or a pair (a, c) of float32 [C] tensors on x's device,
    C = x.shape[1]: the per-channel BN + ReLU coefficients a kernel applies to x as it reads it
    (relu(a*x + c))."""
    if vectors is None:
        return
    c = x.shape[1]
    if len(vectors) != 2 or any(
            not isinstance(t, torch.Tensor) or t.shape != (c,) or t.dtype != torch.float32
            or t.device != x.device or (c > 1 and t.stride(0) != 1) for t in vectors):
        raise ValueError(f"{what}: {name} must be two contiguous float32 [{c}] tensors on "
                         f"{x.device}")
