"""inception_v3_paper(): the network of the paper's Table 1 (Szegedy et al. 2015), a second model
next to torchvision's layout, built from the same fused ConvBNReLU units.

At 299x299 (Table 1):
  stem   conv 3x3/2 32, conv 3x3 32, conv 3x3 padded 64, max-pool 3x3/2, conv 3x3 80,
         conv 3x3/2 192, conv 3x3 padded 288                                  -> 35x35x288
  3 x Figure 5 (Mixed_5b-d)                                                   -> 35x35x288
  grid reduction, Figure 10 (Mixed_6a)                                        -> 17x17x768
  5 x Figure 6, n = 7, inner widths 128, 160, 160, 192, 192 (Mixed_6b-f)      -> 17x17x768
  grid reduction (Mixed_7a)                                                   -> 8x8x1280
  2 x Figure 7 (Mixed_7b-c, torchvision's InceptionE)                         -> 8x8x2048
  global average pool, dropout, linear                                        -> logits
  BN-auxiliary head (AuxLogits) on Mixed_6f, in training only.
Its stem has the same spatial arithmetic as torchvision's (a 3x3/2 conv where torchvision has
a 1x1 conv and a 3x3/2 max-pool), so the low-resolution variants of section 9 (input_size 151
and 79) and the minimum input sizes are those of inception_v3 (models/shapes.py).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .. import backends
from ..nn import ConvBNReLU, InceptionE
from ..nn.paper_blocks import InceptionAuxBN, InceptionFig5, InceptionFig6, InceptionReduction
from ..nn.pool import GlobalAvgPool, MaxPool3x3s2, unit_then_pool
from .base import InceptionBase, stem_variant

FIG6_WIDTHS = (128, 160, 160, 192, 192)  # inner widths of Mixed_6b..Mixed_6f


class InceptionV3Paper(InceptionBase):
    name = "inception_v3_paper"

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.2,
                 backend: str = "auto", input_size: int = 299, init_weights: bool = True):
        super().__init__()
        stride1a, has_maxpool1 = stem_variant(input_size)
        backends.check(backend)
        self.aux_logits = aux_logits
        self.input_size = input_size
        conv = partial(ConvBNReLU, backend=backend)
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=stride1a)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = MaxPool3x3s2(backend) if has_maxpool1 else nn.Identity()
        self.Conv2d_3b_3x3 = conv(64, 80, kernel_size=3)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3, stride=2)
        self.Conv2d_4b_3x3 = conv(192, 288, kernel_size=3, padding=1)
        self.Mixed_5b = InceptionFig5(288, backend=backend)
        self.Mixed_5c = InceptionFig5(288, backend=backend)
        self.Mixed_5d = InceptionFig5(288, backend=backend)
        self.Mixed_6a = InceptionReduction(288, 256, 384, 64, 96, backend=backend)
        for name, c7 in zip(("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_6f"),
                            FIG6_WIDTHS):
            setattr(self, name, InceptionFig6(768, channels_7x7=c7, backend=backend))
        self.AuxLogits = InceptionAuxBN(768, num_classes, backend=backend) if aux_logits else None
        self.Mixed_7a = InceptionReduction(768, 192, 320, 128, 192, backend=backend)
        self.Mixed_7b = InceptionE(1280, backend=backend)
        self.Mixed_7c = InceptionE(2048, backend=backend)
        self.avgpool = GlobalAvgPool(backend)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        if init_weights:
            self._init_weights()

    def forward(self, x: torch.Tensor):
        run_aux = self._check_input(x)
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = unit_then_pool(self.maxpool1, self.Conv2d_2b_3x3, x)
        x = self.Conv2d_3b_3x3(x)
        x = self.Conv2d_4a_3x3(x)
        x = self.Conv2d_4b_3x3(x)
        x = self.Mixed_5b(x)
        x = self.Mixed_5c(x)
        x = self.Mixed_5d(x)
        x = self.Mixed_6a(x)
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)
        x = self.Mixed_6f(x)
        aux = self.AuxLogits(x) if run_aux else None
        x = self.Mixed_7a(x)
        x = self.Mixed_7b(x)
        x = self.Mixed_7c(x)
        return self._head(x, aux)


def inception_v3_paper(*, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.2,
                       backend: str = "auto", input_size: int = 299) -> InceptionV3Paper:
    """The paper's Table 1 Inception-v3 (random init), computed by `backend`.

    Outputs: logits in eval; InceptionOutputs(logits, aux_logits) in training with the aux head.
    input_size: 299 (accepts H, W >= 75; the aux head in training needs >= 299), 151 (first conv
      stride 1; >= 39, aux >= 151), 79 (first conv stride 1, no first max-pool; >= 21, aux >= 77).
    backend: "torch" (reference, cuDNN on GPU), "triton", "cuda" or "auto".
    """
    return InceptionV3Paper(num_classes=num_classes, aux_logits=aux_logits, dropout=dropout,
                            backend=backend, input_size=input_size)
