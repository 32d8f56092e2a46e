"""inception_fast: fused Triton / CUDA C++ kernels for Inception-v3, and the model and training
loop that use them. `inception_fast.inception_v3()` is a drop-in for torchvision's."""
from . import backends, nn, ops
from .models import Inception3, InceptionOutputs, inception_v3
from .models.inception_v3_paper import InceptionV3Paper, inception_v3_paper
from .version import __version__

__all__ = ["inception_v3", "Inception3", "InceptionOutputs", "inception_v3_paper",
           "InceptionV3Paper", "backends", "nn", "ops"]
