from .base import InceptionOutputs
from .inception_v3 import Inception3, inception_v3

MODEL_NAMES = ("inception_v3", "inception_v3_paper")


def get_model(name: str, **kwargs):
    """Build a model by name (used by the training loop, the benchmarks and `info --model`)."""
    if name == "inception_v3":
        return inception_v3(**kwargs)
    if name == "inception_v3_paper":
        from .inception_v3_paper import inception_v3_paper

        return inception_v3_paper(**kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


__all__ = ["Inception3", "InceptionOutputs", "inception_v3", "get_model", "MODEL_NAMES"]
