"""inception_v3(): a drop-in for torchvision.models.inception_v3 built from fused modules.

Same module names, parameters, buffers and outputs as torchvision's Inception3, so state_dicts
load in both directions. Adds the low-resolution variants of the paper's section 9
(`input_size=151`: first conv at stride 1; `input_size=79`: also no first max-pool), which have
the same parameters and reach the same 35/17/8 grids from the smaller input.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..nn import (InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD,
                  InceptionE)
from ..nn.chain import conv_chain
from ..nn.pool import MaxPool3x3s2
from .base import InceptionBase


class Inception3(InceptionBase):
    name = "inception_v3"

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, init_weights: bool = True, dropout: float = 0.5,
                 backend: str = "auto", input_size: int = 299):
        super().__init__()
        self.transform_input = transform_input
        conv = self._first_units(backend, input_size, aux_logits)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.maxpool2 = MaxPool3x3s2(backend)
        self.Mixed_5b = InceptionA(192, pool_features=32, backend=backend)
        self.Mixed_5c = InceptionA(256, pool_features=64, backend=backend)
        self.Mixed_5d = InceptionA(288, pool_features=64, backend=backend)
        self.Mixed_6a = InceptionB(288, backend=backend)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, backend=backend)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, backend=backend)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, backend=backend)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, backend=backend)
        self.AuxLogits = InceptionAux(768, num_classes, backend=backend) if aux_logits else None
        self.Mixed_7a = InceptionD(768, backend=backend)
        self.Mixed_7b = InceptionE(1280, backend=backend)
        self.Mixed_7c = InceptionE(2048, backend=backend)
        self._last_modules(num_classes, dropout, backend, init_weights)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        # ImageNet normalization -> the [-1, 1] scaling the Google weights expect (torchvision's).
        x0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x0, x1, x2), 1)

    BEFORE_AUX = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                  "Mixed_6d", "Mixed_6e")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = conv_chain(self._transform_input(x), self.Conv2d_1a_3x3, self.Conv2d_2a_3x3,
                       self.Conv2d_2b_3x3, pool=self.maxpool1)
        return conv_chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, pool=self.maxpool2)


def _load_weights(weights: Any) -> dict:
    if isinstance(weights, (str, os.PathLike)):
        if not os.path.exists(weights):
            raise FileNotFoundError(f"weights file not found: {weights}")
        obj = torch.load(weights, map_location="cpu", weights_only=True)
    elif isinstance(weights, dict):
        obj = weights
    else:
        raise TypeError("weights must be a path to a state_dict file or a state_dict, "
                        f"got {type(weights).__name__}")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return obj


def inception_v3(*, weights=None, num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, init_weights: bool = True, dropout: float = 0.5,
                 backend: str = "auto", input_size: int = 299) -> Inception3:
    """Inception-v3 with torchvision's layout and state_dict, computed by `backend`.

    weights: a path to a state_dict (e.g. torchvision's ImageNet checkpoint
      inception_v3_google-0cc3c7bd.pth) or a state_dict; nothing is downloaded. As torchvision
      does for its pretrained weights, a checkpoint with an AuxLogits head expects aux_logits=True.
    input_size: 299 (standard; accepts H, W >= 75, aux head in training needs >= 299),
      151 (first conv stride 1; accepts >= 39, aux >= 151), 79 (first conv stride 1 and no first
      max-pool; accepts >= 21, aux >= 77).
    backend: "torch" (reference, cuDNN on GPU), "triton", "cuda" or "auto".
    """
    model = Inception3(num_classes=num_classes, aux_logits=aux_logits,
                       transform_input=transform_input,
                       init_weights=init_weights and weights is None, dropout=dropout,
                       backend=backend, input_size=input_size)
    if weights is not None:
        state = _load_weights(weights)
        if not aux_logits:
            state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not match inception_v3(num_classes={num_classes}, "
                             f"aux_logits={aux_logits}): missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}")
    return model
