"""Anchor / proposal to object matching by IoU thresholds."""

from __future__ import annotations

import torch

NEGATIVE = -1
IGNORE = -2


class Matcher:
    """``matcher(iou Tensor[G, A]) -> Tensor[A]`` int64: object index, ``NEGATIVE`` or ``IGNORE``.

    max IoU >= ``fg_iou`` -> that object; < ``bg_iou`` -> NEGATIVE; otherwise IGNORE. With
    ``low_quality`` every object's best-overlapping anchors (ties included, IoU > 0) become positive
    too, so small or oddly shaped objects always get a positive (MDT does the same).
    """

    def __init__(self, fg_iou: float, bg_iou: float, low_quality: bool = True) -> None:
        if not 0 <= bg_iou <= fg_iou <= 1:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg {bg_iou}, fg {fg_iou}")
        self.fg_iou, self.bg_iou, self.low_quality = fg_iou, bg_iou, low_quality

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        g, a = iou.shape
        if g == 0:
            return torch.full((a,), NEGATIVE, dtype=torch.int64, device=iou.device)
        best, idx = iou.max(dim=0)
        matches = idx.clone()
        matches[best < self.fg_iou] = IGNORE
        matches[best < self.bg_iou] = NEGATIVE
        if self.low_quality:
            best_per_obj = iou.max(dim=1, keepdim=True).values
            _, anc = torch.nonzero((iou == best_per_obj) & (best_per_obj > 0), as_tuple=True)
            matches[anc] = idx[anc]
        return matches
