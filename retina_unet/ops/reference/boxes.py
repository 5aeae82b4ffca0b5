"""Float64 pure-PyTorch box IoU: the test oracle for ``retina_unet.ops.box_iou``."""

from __future__ import annotations

import torch


def box_volume_reference(boxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[N, 2*D]`` -> ``Tensor[N]`` float64 volumes; 0 where any extent is <= 0."""
    d = boxes.shape[1] // 2
    ext = boxes[:, d:].double() - boxes[:, :d].double()
    vol = torch.ones(boxes.shape[0], dtype=torch.float64, device=boxes.device)
    for k in range(d):  # left-to-right product, the order the kernels use
        vol = vol * ext[:, k]
    return torch.where((ext > 0).all(dim=1), vol, torch.zeros_like(vol))


def box_iou_reference(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``Tensor[N, M]`` in float64 (same formula and order as the kernels)."""
    d = boxes1.shape[1] // 2
    a, b = boxes1.double(), boxes2.double()
    va, vb = box_volume_reference(a), box_volume_reference(b)
    lo = torch.maximum(a[:, None, :d], b[None, :, :d])
    hi = torch.minimum(a[:, None, d:], b[None, :, d:])
    ext = hi - lo
    inter = torch.ones(ext.shape[:2], dtype=torch.float64, device=a.device)
    for k in range(d):
        inter = inter * ext[..., k]
    valid = (ext > 0).all(dim=-1) & (va[:, None] > 0) & (vb[None, :] > 0)
    union = (va[:, None] + vb[None, :]) - inter
    iou = torch.where(valid, inter / torch.where(valid, union, torch.ones_like(union)), torch.zeros_like(inter))
    return iou
