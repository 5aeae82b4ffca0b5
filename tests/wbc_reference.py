"""The sequential weighted box clustering (one cluster per loop step), as it was before the
vectorised implementation in retina_unet/inference/wbc.py: the reference the tests compare it to.

Per image and class: take the highest-scoring remaining box; its cluster is every remaining box with
IoU > ``iou_threshold`` with it; weights w_i = IoU_i * volume_i; score = sum s_i w_i /
(sum w_i + n_missing * mean w_i); coordinates weighted by s_i w_i; drop clusters with score <=
``min_score``; results by score descending.
"""

from __future__ import annotations

import torch

from retina_unet.ops import box_iou


def _volumes(boxes: torch.Tensor) -> torch.Tensor:
    d = boxes.shape[1] // 2
    return (boxes[:, d:] - boxes[:, :d]).clamp(min=0).prod(dim=1)


def weighted_box_clustering_reference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    member_ids: torch.Tensor,
    n_expected: int,
    iou_threshold: float = 1e-5,
    min_score: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One class in one image: ``(boxes (M, 2*D), scores (M,))`` float32, scores decreasing."""
    width = boxes.shape[1] if boxes.dim() == 2 else 4
    if boxes.numel() == 0:
        return boxes.new_zeros((0, width), dtype=torch.float32), scores.new_zeros((0,), dtype=torch.float32)
    b = boxes.detach().to(torch.float64)
    s = scores.detach().to(torch.float64)
    mem = member_ids.detach().to(torch.int64)
    area = _volumes(b).clamp(min=1e-12)
    order = torch.argsort(-s, stable=True)
    iou_all = box_iou(b, b)
    out_boxes, out_scores = [], []
    while order.numel() > 0:
        top = order[0]
        ious = iou_all[top, order]
        in_cluster = ious > iou_threshold
        in_cluster[0] = True  # the top box always belongs to its own cluster (even if degenerate)
        idx = order[in_cluster]
        ov = ious[in_cluster].clamp(min=1e-12)
        w = ov * area[idx]
        sw = s[idx] * w
        n_missing = max(0, n_expected - int(torch.unique(mem[idx]).numel()))
        score = sw.sum() / (w.sum() + n_missing * w.mean())
        coords = (b[idx] * sw[:, None]).sum(0) / sw.sum().clamp(min=1e-300)
        if float(score) > min_score:
            out_boxes.append(coords)
            out_scores.append(score)
        order = order[~in_cluster]
    if not out_boxes:
        return boxes.new_zeros((0, width), dtype=torch.float32), scores.new_zeros((0,), dtype=torch.float32)
    ob, os_ = torch.stack(out_boxes), torch.stack(out_scores)
    srt = torch.argsort(-os_, stable=True)
    return ob[srt].float(), os_[srt].float()
