"""Fused ops: each owns its forward and backward (torch.autograd.Function) per backend, and a
pure-torch reference with the same semantics (the oracle in tests, the fallback everywhere)."""
from .conv_bn_relu import conv_bn_relu, conv_bn_relu_reference

__all__ = ["conv_bn_relu", "conv_bn_relu_reference"]
