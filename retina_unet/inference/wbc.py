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

Implementation: vectorised over every (image, class) group of a batch at once, on the tensors'
device (no per-cluster host sync). The cluster tops are exactly the boxes greedy NMS keeps at
``iou_threshold`` within each group (a box starts a cluster iff no earlier top has IoU > threshold
with it), so they come from ``ops.batched_nms`` on float64 boxes (whose IoU is the same float64
function as ``ops.box_iou``); every other box joins the first top, in score order, that it overlaps.
Sums per cluster are scatter-adds; the result equals the sequential per-cluster loop (kept as
``tests/wbc_reference.py``) to float64 rounding (tested to 1e-6 in float32 output).
"""


from __future__ import annotations

import torch

from retina_unet.ops import batched_nms, box_iou


def _volumes(boxes: torch.Tensor) -> torch.Tensor:
    d = boxes.shape[1] // 2
    return (boxes[:, d:] - boxes[:, :d]).clamp(min=0).prod(dim=1)


def _empty(boxes: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = boxes.device
    return (
        torch.zeros((0, width), dtype=torch.float32, device=dev),
        torch.zeros((0,), dtype=torch.float32, device=dev),
        torch.zeros((0,), dtype=torch.int64, device=dev),
    )


def weighted_box_clustering_batched(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    member_ids: torch.Tensor,
    groups: torch.Tensor,
    n_expected: int,
    iou_threshold: float = 1e-5,
    min_score: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """WBC of many groups at once (a group = one class in one image; see the module docstring).

    Args:
        boxes: ``(N, 2*D)`` boxes, all groups concatenated (in the original image frame).
        scores: ``(N,)``. member_ids: ``(N,)`` int, the ensemble member of each box.
        groups: ``(N,)`` int, the group of each box (e.g. ``image * num_classes + class``); boxes of
            different groups are never clustered together.
        n_expected: the number of ensemble members (predictions expected per object).
        iou_threshold: cluster membership needs IoU > this with the cluster's top box.
        min_score: clusters with merged score <= this are dropped.

    Returns:
        ``(boxes (M, 2*D) float32, scores (M,) float32, groups (M,) int64)`` of the clusters, sorted
        by group ascending, then score descending (ties: the order of the clusters' top boxes).
    """
    width = boxes.shape[1] if boxes.dim() == 2 else 4
    n = boxes.shape[0] if boxes.dim() == 2 else 0
    if n == 0:
        return _empty(boxes, width)
    dev = boxes.device
    b = boxes.detach().to(torch.float64)
    s = scores.detach().to(torch.float64)
    mem = member_ids.detach().to(device=dev, dtype=torch.int64)
    grp = groups.detach().to(device=dev, dtype=torch.int64)
    area = _volumes(b).clamp(min=1e-12)
    # Cluster tops, by score descending (ties: lower index), per group: the greedy NMS keep set.
    tops = batched_nms(b, s, grp, float(iou_threshold))
    h = tops.shape[0]
    # Each box joins the first top (in that order) of its group it overlaps; a top joins itself
    # (also a degenerate one, whose IoU with itself is 0).
    iou = box_iou(b[tops], b)  # (H, N)
    member = (iou > iou_threshold) & (grp[tops][:, None] == grp[None, :])
    member[torch.arange(h, device=dev), tops] = True
    cluster = torch.argmax(member.to(torch.uint8), dim=0)  # first True along the tops
    ov = iou.gather(0, cluster[None, :]).squeeze(0).clamp(min=1e-12)  # IoU with the cluster's top
    w = ov * area
    sw = s * w
    zeros = torch.zeros(h, dtype=torch.float64, device=dev)
    sum_w = zeros.index_add(0, cluster, w)
    sum_sw = zeros.index_add(0, cluster, sw)
    count = zeros.index_add(0, cluster, torch.ones_like(w))
    coords = torch.zeros((h, width), dtype=torch.float64, device=dev).index_add(0, cluster, b * sw[:, None])
    # Distinct ensemble members per cluster: sort by (cluster, member), count the first of each run.
    o = torch.argsort(mem, stable=True)
    o = o[torch.argsort(cluster[o], stable=True)]
    c_s, m_s = cluster[o], mem[o]
    first = torch.ones(n, dtype=torch.bool, device=dev)
    first[1:] = (c_s[1:] != c_s[:-1]) | (m_s[1:] != m_s[:-1])
    distinct = zeros.index_add(0, c_s, first.to(torch.float64))
    n_missing = (float(n_expected) - distinct).clamp(min=0)
    score = sum_sw / (sum_w + n_missing * (sum_w / count))
    coords = coords / sum_sw.clamp(min=1e-300)[:, None]
    top_groups = grp[tops]
    # Sort by group, then score descending, then top order (stable sorts from the last key).
    order = torch.argsort(-score, stable=True)
    order = order[torch.argsort(top_groups[order], stable=True)]
    order = order[score[order] > min_score]
    return coords[order].float(), score[order].float(), top_groups[order]


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
    groups = torch.zeros(boxes.shape[0] if boxes.dim() == 2 else 0, dtype=torch.int64, device=boxes.device)
    ob, os_, _ = weighted_box_clustering_batched(
        boxes, scores, member_ids, groups, n_expected, iou_threshold, min_score
    )
    return ob, os_
