"""Anchor / proposal to object matching by IoU thresholds."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from retina_unet import ops

NEGATIVE = -1
IGNORE = -2
PADDING_IOU = -1.0  # IoU of the padding rows in :meth:`Matcher.match_padded`: below every real IoU


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

    def match_padded(self, iou: torch.Tensor) -> torch.Tensor:
        """A batch at once: ``iou Tensor[B, G, A]`` whose rows beyond an image's objects hold
        ``PADDING_IOU`` (G >= 1) -> ``Tensor[B, A]``, row b equal to ``self(iou[b, :G_b])``.

        A padding row never wins: its IoU is below every real one (ties between real objects go to
        the first, as in the per-image call: ``max`` returns the first maximal index) and below
        ``bg_iou``, so an image without objects is all NEGATIVE; nor is it a low-quality match
        (that needs IoU > 0)."""
        best, idx = iou.max(dim=1)  # (B, A)
        matches = idx.masked_fill(best < self.fg_iou, IGNORE)
        matches = matches.masked_fill(best < self.bg_iou, NEGATIVE)
        if self.low_quality:
            best_per_obj = iou.max(dim=2, keepdim=True).values  # (B, G, 1)
            low = ((iou == best_per_obj) & (best_per_obj > 0)).any(dim=1)  # (B, A)
            matches = torch.where(low, idx, matches)
        return matches


def match_batch(matcher: Matcher, gt_boxes: Sequence[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, A]``: row b is ``matcher(box_iou(gt_boxes[b], boxes))`` (NEGATIVE everywhere
    for an image without objects), for every image with one IoU call and one matching pass.

    ``gt_boxes``: per image ``Tensor[G_b, 2*D]`` float32; ``boxes``: ``Tensor[A, 2*D]`` shared by
    the images (the anchors). The IoUs are the per-image ones (each row of ``box_iou`` depends on
    its box only), laid out ``(B, max G_b, A)`` with ``PADDING_IOU`` rows."""
    counts = [g.shape[0] for g in gt_boxes]
    b, gmax, a = len(counts), max(counts, default=0), boxes.shape[0]
    if gmax == 0:
        return torch.full((b, a), NEGATIVE, dtype=torch.int64, device=boxes.device)
    iou = boxes.new_full((b * gmax, a), PADDING_IOU)
    rows = [i * gmax + j for i, n in enumerate(counts) for j in range(n)]
    iou[torch.tensor(rows, device=boxes.device)] = ops.box_iou(torch.cat(list(gt_boxes)), boxes)
    return matcher.match_padded(iou.view(b, gmax, a))


def gather_matched(
    per_image: Sequence[torch.Tensor], matches: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[b, a] = per_image[b][matches[b, a]]`` where ``matches[b, a] >= 0`` (e.g. the matched
    object's box or label, ``per_image[b]`` of shape ``(G_b, ...)``); elsewhere some object's value
    or zeros (read them through a mask). ``matches``: ``(B, A)`` from :func:`match_batch`. With
    ``rows`` (indices into ``matches.flatten()``) only those entries: ``out.flatten(0, 1)[rows]``."""
    counts = [v.shape[0] for v in per_image]
    first = per_image[0]
    flat = torch.cat([*per_image, first.new_zeros((1, *first.shape[1:]))])  # a row for empty images
    starts = [0, *itertools.accumulate(counts)][:-1]
    start = torch.tensor(starts, dtype=torch.int64, device=matches.device)
    index = start[:, None] + matches.clamp(min=0)
    return flat[index if rows is None else index.flatten()[rows]]
