"""What both networks share: the section-9 stem variants, input checks, torchvision's init,
backend switching and the classifier head."""
from __future__ import annotations

from collections import namedtuple
from functools import partial

import torch
from torch import nn

from .. import backends
from ..nn import ConvBNReLU
from ..nn.pool import GlobalAvgPool, MaxPool3x3s2
from .shapes import check_input_size, grid_sizes

# The same namedtuple shape as torchvision's (not imported: torchvision is optional at runtime).
InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])
InceptionOutputs.__annotations__ = {"logits": torch.Tensor, "aux_logits": torch.Tensor | None}

VARIANTS = {
    # input_size: (stride of Conv2d_1a_3x3, has maxpool1)
    299: (2, True),
    151: (1, True),
    79: (1, False),
}


def stem_variant(input_size: int) -> tuple[int, bool]:
    """(stride of the first conv, whether the first max-pool exists) for a section-9 variant."""
    if input_size not in VARIANTS:
        raise ValueError(f"input_size must be one of {sorted(VARIANTS)} (the paper's variants), "
                         f"got {input_size}")
    return VARIANTS[input_size]


class InceptionBase(nn.Module):
    """Subclasses set `name`, `input_size`, `aux_logits` and the modules `AuxLogits`, `avgpool`,
    `dropout`, `fc`."""

    name = "inception"

    def _first_units(self, backend: str, input_size: int, aux_logits: bool):
        """The settings and the stem's first three units and max-pool, which both networks
        share (registered first: state_dict order and init draws as torchvision's); returns
        the unit factory for the rest."""
        stride1a, has_maxpool1 = stem_variant(input_size)
        backends.check(backend)
        self.aux_logits = aux_logits
        self.input_size = input_size
        conv = partial(ConvBNReLU, backend=backend)
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=stride1a)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = MaxPool3x3s2(backend) if has_maxpool1 else nn.Identity()
        return conv

    def _last_modules(self, num_classes: int, dropout: float, backend: str,
                      init_weights: bool) -> None:
        """The head both networks share, registered last, then torchvision's init."""
        self.avgpool = GlobalAvgPool(backend)
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
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def set_backend(self, backend: str):
        """Switch every fused module to `backend` (checked here, resolved per call)."""
        backends.check(backend)
        for m in self.modules():
            if isinstance(m, (ConvBNReLU, MaxPool3x3s2, GlobalAvgPool)):
                m.backend = backend
        return self

    def _check_input(self, x: torch.Tensor) -> bool:
        """Clear errors for bad input; returns whether the aux head runs on this call."""
        what = self.name
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{what} expects input of shape (N, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{what} expects a floating-point input, got {x.dtype}")
        h, w = x.shape[2], x.shape[3]
        aux = self.training and self.AuxLogits is not None
        check_input_size((h, w), self.input_size, aux, what=what)
        if self.training and x.shape[0] == 1 and (
                aux or grid_sizes(min(h, w), self.input_size)["grid8"] == 1):
            # The aux head's 1x1 maps, or a 1x1 last grid, would give BN one value per channel.
            raise ValueError(f"{what} in training needs a batch of at least 2 at {h}x{w}"
                             f"{' with the aux head' if aux else ''} (batch norm statistics of "
                             "one value per channel are undefined); got a batch of 1")
        return aux

    # The Mixed blocks in order, split at the aux head's input (subclasses set BEFORE_AUX and
    # _stem: the two networks differ only in their stems and in how many 17x17 blocks).
    BEFORE_AUX: tuple[str, ...] = ()
    AFTER_AUX = ("Mixed_7a", "Mixed_7b", "Mixed_7c")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        run_aux = self._check_input(x)
        x = self._stem(x)
        for name in self.BEFORE_AUX:
            x = getattr(self, name)(x)
        aux = self.AuxLogits(x) if run_aux else None
        for name in self.AFTER_AUX:
            x = getattr(self, name)(x)
        return self._head(x, aux)

    def _head(self, x: torch.Tensor, aux: torch.Tensor | None):
        x = self.avgpool(x)
        x = self.dropout(x)
        x = self.fc(torch.flatten(x, 1))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x
