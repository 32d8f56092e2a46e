"""nn.Modules with torchvision's parameter names, computed by the fused ops."""
from .blocks import InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE
from .conv_bn_relu import ConvBNReLU, dispatch_key, timing_runner

__all__ = ["ConvBNReLU", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE",
           "InceptionAux", "dispatch_key", "timing_runner"]
