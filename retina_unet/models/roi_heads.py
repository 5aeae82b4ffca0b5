"""Second stage of Mask R-CNN / Faster R-CNN+: multi-level RoIAlign, box head, mask head.

RoIAlign goes through ``retina_unet.ops.roi_align``; RoIs are scaled to each level's grid per axis
before the call (``spatial_scale=1``), so anisotropic 3D strides work with the scalar-scale op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from retina_unet import ops
from retina_unet.models.config import BOX_HEADS
from retina_unet.nn.layers import ConvNormAct, conv_layer, conv_transpose_layer


def assign_levels(
    boxes: torch.Tensor, levels: Sequence[int], canonical_size: float, canonical_level: int
) -> torch.Tensor:
    """FPN level per box: round(canonical_level + log2(geometric-mean extent / canonical_size)),
    clamped to ``levels`` (contiguous). Rounding as MDT, so a ~39-40 px disc with canonical 80 at
    level 4 goes to P3 (floor would send a 39 px disc to P2)."""
    d = boxes.shape[1] // 2
    ext = (boxes[:, d:] - boxes[:, :d]).clamp(min=1e-6)
    size = torch.exp(torch.log(ext).mean(dim=1))
    k = torch.round(canonical_level + torch.log2(size / canonical_size + 1e-8))
    return k.clamp(min(levels), max(levels)).to(torch.int64)


def multilevel_roi_align(
    feats: dict[int, torch.Tensor],
    boxes: Sequence[torch.Tensor],
    strides: dict[int, Sequence[int]],
    levels: Sequence[int],
    output_size: Sequence[int],
    canonical_size: float,
    canonical_level: int,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """Pool every image's boxes from its assigned level: ``(sum R_i, ch, *output_size)``."""
    all_boxes = torch.cat(list(boxes), 0)
    counts = torch.tensor([b.shape[0] for b in boxes], device=all_boxes.device)
    batch = torch.repeat_interleave(
        torch.arange(len(boxes), device=all_boxes.device), counts, output_size=all_boxes.shape[0]
    ).to(all_boxes.dtype)
    ch = feats[levels[0]].shape[1]
    out = all_boxes.new_zeros((all_boxes.shape[0], ch, *output_size)).to(feats[levels[0]].dtype)
    if all_boxes.shape[0] == 0:
        return out
    lvl = assign_levels(all_boxes, levels, canonical_size, canonical_level)
    roi_align = ops.roi_align
    for k in levels:
        idx = torch.nonzero(lvl == k).squeeze(1)
        if idx.numel() == 0:
            continue
        scale = torch.tensor(
            [1.0 / s for s in strides[k]] * 2, dtype=all_boxes.dtype, device=all_boxes.device
        )
        rois = torch.cat([batch[idx, None], all_boxes[idx] * scale], 1).float()
        # float32 features and rois: the op wants matching dtypes, and autocast may hand us float16
        out[idx] = roi_align(feats[k].float(), rois, tuple(output_size), 1.0, sampling_ratio, True).to(
            out.dtype
        )
    return out


class BoxHead(nn.Module):
    """The second stage's classifier and box regressor on a pooled RoI ``(R, cin, *pool)``.

    ``kind="fc"`` (MDT): two FC layers, then class logits (C+1) and class-specific deltas
    ((C+1) * 2D). ``kind="conv"`` (this project's 3D option, docs/models.md "3D Mask R-CNN"):
    ``convs`` 3^D convolutions (``conv_channels`` wide, default ``cin``) shared over the RoI's bins first; the class logits read their
    maximum over the bins (so a cue such as the 27-voxel donut hole counts wherever it falls in
    the RoI, as in Retina Net's convolutional head), the deltas the FC layers on the flattened map.
    ``kind="fc_centre"`` (the 3D ``cpu`` model size's head): MDT's FC head plus a linear map of the centre
    bin's features (the mean of the two middle bins along an even axis) added to the class logits: a
    short path from the class loss to the features at the object's centre, which the 3D hole needs
    (docs/models.md, "3D Mask R-CNN"); the deltas are the FC head's. ``kind="conv_centre"``: the
    same, but the centre read takes the centre bin after ``convs`` 3^D convolutions over the RoI's
    bins (two give the centre bin the whole 5^3 RoI as receptive field), a nonlinear read of the
    centre and its surround, as Retina Net's head convolutions give its class.
    """

    def __init__(
        self,
        spatial_dims: int,
        cin: int,
        pool: Sequence[int],
        fc: int,
        num_classes: int,
        kind: str = "fc",
        conv_channels: int | None = None,
        convs: int = 2,
    ) -> None:
        super().__init__()
        if kind not in BOX_HEADS:
            raise ValueError(f"kind must be one of {BOX_HEADS}, got {kind!r}")
        self.spatial_dims, self.num_outputs, self.kind = spatial_dims, num_classes + 1, kind
        width = cin  # channels after the convolutions over the bins (without them: the input's)
        convs_on_bins: nn.Module = nn.Identity()
        if kind in ("conv", "conv_centre"):
            width = cin if conv_channels is None else conv_channels
            if width < 1 or convs < 1:
                raise ValueError(f"a {kind} box head needs conv_channels >= 1 and convs >= 1, got {width}, {convs}")
            convs_on_bins = nn.Sequential(
                *[ConvNormAct(spatial_dims, cin if i == 0 else width, width, 3) for i in range(convs)]
            )
        # "conv": the convolutions feed every output; "conv_centre": only the centre read
        self.trunk: nn.Module = convs_on_bins if kind == "conv" else nn.Identity()
        self.centre_trunk: nn.Module = convs_on_bins if kind == "conv_centre" else nn.Identity()
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear((width if kind == "conv" else cin) * math.prod(pool), fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Linear(width if kind == "conv" else fc, num_classes + 1)
        # fc_centre / conv_centre: a linear read of the centre bin added to the FC head's class
        # logits (PyTorch's default init, as measured); the centre bin's slices per axis, two for
        # even pool sizes
        self.centre = nn.Linear(width, num_classes + 1) if kind in ("fc_centre", "conv_centre") else None
        self.centre_bins = tuple(slice((s - 1) // 2, s // 2 + 1) for s in pool)
        self.box = nn.Linear(fc, (num_classes + 1) * 2 * spatial_dims)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.box.bias)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> logits ``(R, C+1)``, deltas ``(R, C+1, 2D)``."""
        t = self.trunk(pooled)
        h = self.fc(t)
        logits = self.cls(t.flatten(2).amax(2)) if self.kind == "conv" else self.cls(h)
        if self.centre is not None:
            c = self.centre_trunk(pooled)[(..., *self.centre_bins)]
            logits = logits + self.centre(c.flatten(2).mean(2))
        return logits, self.box(h).view(-1, self.num_outputs, 2 * self.spatial_dims)


class MaskHead(nn.Module):
    """4 x conv3x3 + ReLU, transposed conv x2 + ReLU, 1x1 conv to one mask logit per class:
    ``(R, ch, *pool)`` -> ``(R, C, *(2 * pool))``."""

    def __init__(self, spatial_dims: int, cin: int, width: int, num_classes: int, norm: str | None) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *[ConvNormAct(spatial_dims, cin if i == 0 else width, width, 3, norm=norm) for i in range(4)]
        )
        self.up = conv_transpose_layer(spatial_dims)(width, width, 2, stride=2)
        self.logits = conv_layer(spatial_dims)(width, num_classes, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.logits(torch.relu(self.up(self.convs(pooled))))
