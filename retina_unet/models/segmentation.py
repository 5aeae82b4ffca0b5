"""The P0 segmentation head shared by Retina U-Net, U-FRCNN+ and DetU-Net.

Two target modes (``ModelConfig.seg_classes``): "binary" - 2 channels, background vs any object
(MDT's ``class_specific_seg_flag=False``, Retina U-Net's default), so the masks carry no class
information, the premise of the paper's pattern and scale findings; "per_class" - background + one
channel per class, trained on the class map in ``targets[i]["masks"]`` (U-FRCNN+, DetU-Net).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retina_unet.models.losses import dice_ce_loss
from retina_unet.nn.layers import conv_layer


class SegHead(nn.Module):
    """1x1 conv: P0 features ``(B, ch, *S)`` -> logits ``(B, K, *S)``, K = 2 ("binary") or
    ``num_classes + 1`` ("per_class")."""

    def __init__(
        self, spatial_dims: int, in_channels: int, num_classes: int, mode: str = "per_class"
    ) -> None:
        super().__init__()
        if mode not in ("binary", "per_class"):
            raise ValueError(f"seg_classes must be 'binary' or 'per_class', got {mode!r}")
        self.mode = mode
        self.out_channels = 2 if mode == "binary" else num_classes + 1
        self.conv = conv_layer(spatial_dims)(in_channels, self.out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small weights and a background prior of 0.9: objects cover a few percent of the toy
        images, so training starts near the constant predictor instead of spending its first
        hundred Adam steps moving the bias there."""
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)
        k = self.conv.bias.numel() - 1
        with torch.no_grad():
            self.conv.bias[0] = math.log(9.0 * k)

    def forward(self, p0: torch.Tensor) -> torch.Tensor:
        return self.conv(p0)

    def targets(self, masks: torch.Tensor) -> torch.Tensor:
        """Class maps ``(B, *S)`` int64 -> this head's targets (foreground = 1 in binary mode)."""
        return (masks > 0).to(torch.int64) if self.mode == "binary" else masks

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """(soft Dice + CE) / 2 against the class maps ``masks`` (B, *S) int64; keys seg, seg_dice, seg_ce."""
        return dice_ce_loss(logits.float(), self.targets(masks))

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits.float(), dim=1)
