"""The P0 segmentation head shared by Retina U-Net, U-FRCNN+ and DetU-Net.

Segmentation classes: background + one channel per foreground class (``num_classes + 1``), trained
on the class map in ``targets[i]["masks"]``. On ``donuts_shape`` the class lives in the mask's shape,
so class-specific segmentation carries the class signal; MDT's binary fg/bg variant is not used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retina_unet.models.losses import dice_ce_loss
from retina_unet.nn.layers import conv_layer


class SegHead(nn.Module):
    """1x1 conv: P0 features ``(B, ch, *S)`` -> logits ``(B, num_classes + 1, *S)``."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_layer(spatial_dims)(in_channels, num_classes + 1, 1)
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

    @staticmethod
    def loss(logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """(soft Dice + CE) / 2 against ``masks`` (B, *S) int64; keys seg, seg_dice, seg_ce."""
        return dice_ce_loss(logits.float(), masks)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits.float(), dim=1)
