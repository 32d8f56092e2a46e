from .inception_v3 import Inception3, InceptionOutputs, inception_v3

__all__ = ["Inception3", "InceptionOutputs", "inception_v3"]
