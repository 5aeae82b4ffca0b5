"""Dimension-generic building blocks: layer factories keyed on ``spatial_dims`` and the ResNet-FPN."""

from retina_unet.nn.backbone import FPN, ResNetEncoder, ResNetFPN, normalise_strides
from retina_unet.nn.layers import (
    ConvNormAct,
    conv_layer,
    conv_transpose_layer,
    interpolate_mode,
    max_pool_layer,
    norm_layer,
    resize_to,
)

__all__ = [
    "FPN",
    "ResNetEncoder",
    "ResNetFPN",
    "normalise_strides",
    "ConvNormAct",
    "conv_layer",
    "conv_transpose_layer",
    "interpolate_mode",
    "max_pool_layer",
    "norm_layer",
    "resize_to",
]
