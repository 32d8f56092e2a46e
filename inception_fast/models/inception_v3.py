"""inception_v3(): a drop-in for torchvision.models.inception_v3 built from fused modules.

Same module names, parameters, buffers and outputs as torchvision's Inception3, so state_dicts
load in both directions. Adds the low-resolution variants of the paper's section 9
(`input_size=151`: first conv at stride 1; `input_size=79`: also no first max-pool), which have
the same parameters and reach the same 35/17/8 grids from the smaller input.
"""
from __future__ import annotations

import os
from collections import namedtuple
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import backends
from ..nn import (ConvBNReLU, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD,
                  InceptionE)
from .shapes import check_input_size

# The same namedtuple shape as torchvision's (not imported: torchvision is optional at runtime).
InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])
InceptionOutputs.__annotations__ = {"logits": torch.Tensor, "aux_logits": torch.Tensor | None}

VARIANTS = {
    # input_size: (stride of Conv2d_1a_3x3, has maxpool1)
    299: (2, True),
    151: (1, True),
    79: (1, False),
}


class Inception3(nn.Module):
    def __init__(self, num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, init_weights: bool = True, dropout: float = 0.5,
                 backend: str = "auto", input_size: int = 299):
        super().__init__()
        if input_size not in VARIANTS:
            raise ValueError(f"input_size must be one of {sorted(VARIANTS)} (the paper's variants), "
                             f"got {input_size}")
        stride1a, has_maxpool1 = VARIANTS[input_size]
        backends.check(backend)
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.input_size = input_size
        conv = partial(ConvBNReLU, backend=backend)
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=stride1a)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2) if has_maxpool1 else nn.Identity()
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
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
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's init: truncated normal (std 0.1, or the module's `stddev`), BN 1/0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                stddev = float(m.stddev) if hasattr(m, "stddev") else 0.1
                nn.init.trunc_normal_(m.weight, mean=0.0, std=stddev, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def set_backend(self, backend: str) -> "Inception3":
        """Switch every fused module to `backend` (checked here, resolved per call)."""
        backends.check(backend)
        for m in self.modules():
            if isinstance(m, ConvBNReLU):
                m.backend = backend
        return self

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        # ImageNet normalization -> the [-1, 1] scaling the Google weights expect (torchvision's).
        x0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x0, x1, x2), 1)

    def _check_input(self, x: torch.Tensor) -> bool:
        """Clear errors for bad input; returns whether the aux head runs on this call."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"inception_v3 expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"inception_v3 expects input of shape (N, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"inception_v3 expects a floating-point input, got {x.dtype}")
        aux = self.training and self.AuxLogits is not None
        check_input_size(tuple(x.shape[2:]), self.input_size, aux)
        return aux

    def forward(self, x: torch.Tensor):
        run_aux = self._check_input(x)
        x = self._transform_input(x)
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = self.maxpool1(x)
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = self.maxpool2(x)
        x = self.Mixed_5b(x)
        x = self.Mixed_5c(x)
        x = self.Mixed_5d(x)
        x = self.Mixed_6a(x)
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)
        aux = self.AuxLogits(x) if run_aux else None
        x = self.Mixed_7a(x)
        x = self.Mixed_7b(x)
        x = self.Mixed_7c(x)
        x = self.avgpool(x)
        x = self.dropout(x)
        x = self.fc(torch.flatten(x, 1))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


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
