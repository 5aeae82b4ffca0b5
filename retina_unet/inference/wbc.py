"""Weighted box clustering (WBC; paper Eq. 1, MDT ``weighted_box_clustering``).

Per image and class, over the predictions of all ensemble members (TTA views x top-k epochs):

1. Take the highest-scoring remaining box; its *cluster* is every remaining box with IoU > ``iou_threshold``
   with it (itself included).
2. Each member i of the cluster gets a weight w_i = IoU_i (with the top box) * area_i (volume in 3D)
   (MDT also multiplies a patch-centre factor, 1 for whole-image inference as here).
3. Score: s = sum_i s_i w_i / (sum_i w_i + n_missing * mean_i w_i), where
   n_missing = max(0, n_expected - number of distinct ensemble members in the cluster): an
   ensemble member that predicted nothing here counts as a prediction of score 0 with the mean weight.
4. Coordinates: the average of the members' coordinates weighted by s_i w_i.
5. Remove the cluster's boxes; clusters with score <= ``min_score`` are discarded; repeat.

Difference from MDT (documented choice): MDT counts contributors as distinct *patch ids*, which for
whole-image inference is always 1, so every cluster is penalised as if n_expected - 1 members were
missing (scores shrink towards about half). We count distinct ensemble members, which is what Eq. 1
describes; the ranking within a member-complete set of clusters is the same.
"""

from __future__ import annotations

import torch

from retina_unet.ops import box_iou


def _volumes(boxes: torch.Tensor) -> torch.Tensor:
    d = boxes.shape[1] // 2
    return (boxes[:, d:] - boxes[:, :d]).clamp(min=0).prod(dim=1)


def weighted_box_clustering(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    member_ids: torch.Tensor,
    n_expected: int,
    iou_threshold: float = 1e-5,
    min_score: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster one class's predictions in one image (see module docstring).

    Args:
        boxes: ``(N, 2*D)`` boxes in our convention (all in the original image frame).
        scores: ``(N,)``.
        member_ids: ``(N,)`` int, which ensemble member (view x checkpoint) produced each box.
        n_expected: the number of ensemble members (predictions expected per object).
        iou_threshold: cluster membership needs IoU > this with the top box (MDT toy default 1e-5).
        min_score: clusters with merged score <= this are dropped (MDT: 0.01).

    Returns:
        ``(boxes (M, 2*D), scores (M,))`` of the clusters, scores decreasing; float32.
    """
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
