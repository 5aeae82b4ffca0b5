"""Layer factories keyed on ``spatial_dims`` (2 or 3), so model code never branches on dimension.

Pattern after MONAI's ``Conv[Conv.CONV, spatial_dims]``: ask for the layer *class* for a dimension,
construct it with the usual arguments. Tensors are ``(B, C, *S)`` with ``len(S) == spatial_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
NORMS = (None, "batch", "instance", "group")


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv{1,2,3}d`` for ``spatial_dims``."""
    return _CONV[_check_dims(spatial_dims)]


def conv_transpose_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose{1,2,3}d`` for ``spatial_dims``."""
    return _CONV_T[_check_dims(spatial_dims)]


def max_pool_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool{1,2,3}d`` for ``spatial_dims``."""
    return _MAX_POOL[_check_dims(spatial_dims)]


def interpolate_mode(spatial_dims: int) -> str:
    """The (multi)linear interpolation mode: "bilinear" in 2D, "trilinear" in 3D."""
    return _LINEAR_MODE[_check_dims(spatial_dims)]


def norm_layer(name: str | None, spatial_dims: int, channels: int, groups: int = 8) -> nn.Module:
    """A normalisation layer by name: None (identity, the paper's setting), "batch", "instance", "group"."""
    _check_dims(spatial_dims)
    if name is None or name == "none":
        return nn.Identity()
    if name == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    if name == "instance":
        return _INSTANCE_NORM[spatial_dims](channels, affine=True)
    if name == "group":
        g = next(k for k in range(min(groups, channels), 0, -1) if channels % k == 0)
        return nn.GroupNorm(g, channels)
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "nearest") -> torch.Tensor:
    """Resample ``(B, C, *S)`` to spatial ``size``; mode "nearest" or "linear" (bi/trilinear)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "linear":
        return F.interpolate(x, size=tuple(size), mode=interpolate_mode(x.dim() - 2), align_corners=False)
    return F.interpolate(x, size=tuple(size), mode=mode)


class ConvNormAct(nn.Sequential):
    """conv (k, stride, 'same'-style padding) -> norm -> ReLU (``act=False`` drops the ReLU)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: str | None = None,
        act: bool = True,
    ) -> None:
        ks = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
        pad = tuple(k // 2 for k in ks)
        layers: list[nn.Module] = [
            conv_layer(spatial_dims)(
                in_channels, out_channels, ks, stride=stride, padding=pad, bias=norm is None
            ),
            norm_layer(norm, spatial_dims, out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
