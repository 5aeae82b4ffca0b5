"""ResNet encoder + FPN, and the U-FPN extension to P1/P0 (full resolution) of Retina U-Net.

Levels follow the paper: C1 = stem (stride 2), C2..C5 = bottleneck stages (strides 4..32),
P2..P5 = FPN outputs. With ``min_level=0`` the top-down path continues to P1 (stride 2) and P0
(stride 1, full resolution) with bi/trilinear upsampling, and the encoder starts with C0: two 3x3
convolutions at full resolution (``fine_channels`` wide, else ``start_filters``) in series before
the stem, so C0 feeds C1..C5 and hence P2..P5 too (MDT ``operate_stride1``).

Strides are per stage and per axis: ``strides`` has 5 entries (stem conv, max-pool, C3, C4, C5), each
an int or a tuple with one stride per spatial axis. MDT's 3D setting keeps the slice axis (axis 0
here) at stride 1 for stem and pool, giving axis-0 strides 1, 2, 4, 8 at P2..P5 and 4..32 in-plane.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from retina_unet.nn.layers import ConvNormAct, conv_layer, max_pool_layer, norm_layer, resize_to

Stride = int | Sequence[int]


def normalise_strides(strides: Sequence[Stride] | None, spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """5 per-stage strides (stem, pool, C3, C4, C5) -> 5 tuples of ``spatial_dims`` ints (default all 2)."""
    if strides is None or len(strides) == 0:
        strides = (2,) * 5
    if len(strides) != 5:
        raise ValueError(f"strides: expected 5 entries (stem, pool, C3, C4, C5), got {len(strides)}")
    out = []
    for s in strides:
        t = (int(s),) * spatial_dims if isinstance(s, int) else tuple(int(v) for v in s)
        if len(t) != spatial_dims or any(v not in (1, 2) for v in t):
            raise ValueError(f"strides: each entry must be 1, 2 or a tuple of {spatial_dims} such, got {s!r}")
        out.append(t)
    return tuple(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand (x4), residual with a projected shortcut when needed."""

    expansion = 4

    def __init__(
        self, spatial_dims: int, cin: int, mid: int, stride: Sequence[int], norm: str | None
    ) -> None:
        super().__init__()
        cout = mid * self.expansion
        self.body = nn.Sequential(
            ConvNormAct(spatial_dims, cin, mid, 1, norm=norm),
            ConvNormAct(spatial_dims, mid, mid, 3, stride=tuple(stride), norm=norm),
            ConvNormAct(spatial_dims, mid, cout, 1, norm=norm, act=False),
        )
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(
                conv_layer(spatial_dims)(cin, cout, 1, stride=tuple(stride), bias=norm is None),
                norm_layer(norm, spatial_dims, cout),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet with bottleneck blocks. ``forward(x)`` -> {1: C1, 2: C2, ..., 5: C5} (+ {0: C0} if asked).

    Channels: C1 = start_filters, C_k = start_filters * 2**(k-2) * 4 for k = 2..5 (ResNet50 layout).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        start_filters: int,
        blocks: Sequence[int],
        norm: str | None = None,
        strides: Sequence[Stride] | None = None,
        with_c0: bool = False,
        c0_channels: int | None = None,
        stem_kernel: int = 7,
    ) -> None:
        super().__init__()
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel: expected an odd kernel size >= 1, got {stem_kernel}")
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(f"blocks: expected 4 positive block counts (C2..C5), got {tuple(blocks)}")
        st = normalise_strides(strides, spatial_dims)
        sf = start_filters
        c0 = c0_channels or sf
        self.c0 = (
            nn.Sequential(
                ConvNormAct(spatial_dims, in_channels, c0, 3, norm=norm),
                ConvNormAct(spatial_dims, c0, c0, 3, norm=norm),
            )
            if with_c0
            else None
        )
        # C1 (the stem) reads C0's output when C0 exists: C0 runs in series (MDT operate_stride1)
        self.c1 = ConvNormAct(spatial_dims, c0 if with_c0 else in_channels, sf, stem_kernel, stride=st[0], norm=norm)
        self.pool = max_pool_layer(spatial_dims)(3, stride=st[1], padding=1)
        stages = []
        cin = sf
        for i, n in enumerate(blocks):
            mid = sf * 2**i
            stride = (1,) * spatial_dims if i == 0 else st[i + 1]
            layers = [Bottleneck(spatial_dims, cin, mid, stride, norm)]
            cin = mid * Bottleneck.expansion
            layers += [Bottleneck(spatial_dims, cin, mid, (1,) * spatial_dims, norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.channels = {0: c0, 1: sf, **{k: sf * 2 ** (k - 2) * 4 for k in range(2, 6)}}
        # per-axis stride of C_k relative to the input
        cum = [(1,) * spatial_dims]
        for k in range(5):
            cum.append(tuple(a * b for a, b in zip(cum[-1], st[k], strict=True)))
        # cum[1] = after stem (C1), cum[2] = after pool (C2), cum[3..5] = C3..C5
        self.strides = {0: cum[0], 1: cum[1], 2: cum[2], 3: cum[3], 4: cum[4], 5: cum[5]}

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        if self.c0 is not None:
            x = self.c0(x)
            out[0] = x
        c = self.c1(x)
        out[1] = c
        c = self.pool(c)
        for k, stage in enumerate(self.stages, start=2):
            c = stage(c)
            out[k] = c
        return out


class FPN(nn.Module):
    """Top-down feature pyramid from levels ``max_level`` down to ``min_level``.

    P_k = conv3x3(lateral_k(C_k) + up(reduce(inner_{k+1}))). Levels >= 2 use nearest upsampling and
    ``channels``; the U-FPN levels 1 and 0 use bi/trilinear upsampling and ``fine_channels``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: dict[int, int],
        channels: int,
        min_level: int = 2,
        max_level: int = 5,
        fine_channels: int | None = None,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.min_level, self.max_level = min_level, max_level
        fine = fine_channels or channels
        self.out_channels = {k: (channels if k >= 2 else fine) for k in range(min_level, max_level + 1)}
        conv = conv_layer(spatial_dims)
        self.lateral = nn.ModuleDict(
            {str(k): conv(in_channels[k], self.out_channels[k], 1) for k in range(min_level, max_level + 1)}
        )
        self.reduce = nn.ModuleDict(
            {
                str(k): (
                    nn.Identity()
                    if self.out_channels[k + 1] == self.out_channels[k]
                    else conv(self.out_channels[k + 1], self.out_channels[k], 1)
                )
                for k in range(min_level, max_level)
            }
        )
        self.output = nn.ModuleDict(
            {
                str(k): ConvNormAct(
                    spatial_dims, self.out_channels[k], self.out_channels[k], 3, norm=norm, act=False
                )
                for k in range(min_level, max_level + 1)
            }
        )

    def forward(self, feats: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        inner = self.lateral[str(self.max_level)](feats[self.max_level])
        out[self.max_level] = self.output[str(self.max_level)](inner)
        for k in range(self.max_level - 1, self.min_level - 1, -1):
            lat = self.lateral[str(k)](feats[k])
            top = resize_to(self.reduce[str(k)](inner), lat.shape[2:], "nearest" if k >= 2 else "linear")
            inner = lat + top
            out[k] = self.output[str(k)](inner)
        return out


class ResNetFPN(nn.Module):
    """ResNet encoder + FPN. ``forward(x (B, C, *S))`` -> {level: (B, ch, *S / stride)}.

    ``min_level=2`` gives P2..P5 (Retina Net, Mask R-CNN); ``min_level=0`` the U-FPN (P0..P5) used by
    Retina U-Net, U-FRCNN+ and DetU-Net.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        start_filters: int,
        blocks: Sequence[int],
        fpn_channels: int,
        norm: str | None = None,
        strides: Sequence[Stride] | None = None,
        min_level: int = 2,
        fine_channels: int | None = None,
        stem_kernel: int = 7,
    ) -> None:
        super().__init__()
        if min_level not in (0, 1, 2, 3, 4):
            raise ValueError(f"min_level must be in 0..4, got {min_level}")
        self.spatial_dims = spatial_dims
        self.encoder = ResNetEncoder(
            spatial_dims,
            in_channels,
            start_filters,
            blocks,
            norm,
            strides,
            with_c0=min_level == 0,
            c0_channels=fine_channels,
            stem_kernel=stem_kernel,
        )
        self.fpn = FPN(spatial_dims, self.encoder.channels, fpn_channels, min_level, 5, fine_channels, norm)
        self.out_channels = self.fpn.out_channels
        self.strides = {k: self.encoder.strides[k] for k in self.out_channels}
        # input sizes must be multiples of the deepest stride per axis (so every level aligns)
        self.required_multiple = self.encoder.strides[5]

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return self.fpn(self.encoder(x))


def init_weights(module: nn.Module, kind: str = "pytorch") -> None:
    """Initialise convolutions: "pytorch" keeps PyTorch's default (what MDT's toy configs use,
    ``weight_init=None``); "he_fan_out" draws He-normal fan-out weights and zero biases."""
    if kind == "pytorch":
        return
    if kind != "he_fan_out":
        raise ValueError(f"init must be 'pytorch' or 'he_fan_out', got {kind!r}")
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
