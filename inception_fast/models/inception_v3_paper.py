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

import torch

from ..nn import InceptionE
from ..nn.paper_blocks import InceptionAuxBN, InceptionFig5, InceptionFig6, InceptionReduction
from ..nn.chain import conv_chain
from .base import InceptionBase

FIG6_WIDTHS = (128, 160, 160, 192, 192)  # inner widths of Mixed_6b..Mixed_6f


class InceptionV3Paper(InceptionBase):
    name = "inception_v3_paper"

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.2,
                 backend: str = "auto", input_size: int = 299, init_weights: bool = True):
        super().__init__()
        conv = self._first_units(backend, input_size, aux_logits)
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
        self._last_modules(num_classes, dropout, backend, init_weights)

    BEFORE_AUX = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                  "Mixed_6d", "Mixed_6e", "Mixed_6f")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = conv_chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3,
                       pool=self.maxpool1)
        return conv_chain(x, self.Conv2d_3b_3x3, self.Conv2d_4a_3x3, self.Conv2d_4b_3x3)


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
