"""Post-processing shared by the detectors: score floor, top-k, clipping, class-wise NMS, cap.

NMS goes through ``retina_unet.ops`` so that ``retina_unet.ops.reference_ops()`` switches the whole
pipeline to the pure-PyTorch reference.
"""

from __future__ import annotations

import torch

from retina_unet import ops
from retina_unet.models.coder import clip_boxes


def empty_detections(d: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros((0, 2 * d), dtype=torch.float32, device=device),
        "scores": torch.zeros((0,), dtype=torch.float32, device=device),
        "labels": torch.zeros((0,), dtype=torch.int64, device=device),
    }


def select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_size: tuple[int, ...],
    score_floor: float,
    pre_nms_top_k: int,
    nms_iou: float,
    max_detections: int,
    min_box_size: float = 1e-2,
) -> dict[str, torch.Tensor]:
    """Candidates of one image -> final detections.

    Args:
        boxes: ``(N, 2*D)`` candidate boxes; scores ``(N,)``; labels ``(N,)`` int64 (NMS groups).
    Steps: keep scores > ``score_floor``; top ``pre_nms_top_k`` by score; clip to the image; drop
    boxes thinner than ``min_box_size`` on any axis; ``ops.batched_nms`` per class; keep the best
    ``max_detections``. Returns float32 boxes/scores and int64 labels, by decreasing score.
    """
    d = boxes.shape[1] // 2
    keep = scores > score_floor
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if scores.numel() > pre_nms_top_k:
        top = torch.topk(scores, pre_nms_top_k).indices
        boxes, scores, labels = boxes[top], scores[top], labels[top]
    boxes = clip_boxes(boxes.float(), image_size)
    big = ((boxes[:, d:] - boxes[:, :d]) >= min_box_size).all(dim=1)
    boxes, scores, labels = boxes[big], scores[big].float(), labels[big]
    if scores.numel() == 0:
        return empty_detections(d, boxes.device)
    keep = ops.batched_nms(boxes, scores, labels, nms_iou, max_output=max_detections)
    return {
        "boxes": boxes[keep].contiguous(),
        "scores": scores[keep].contiguous(),
        "labels": labels[keep].to(torch.int64),
    }


# --- the whole batch in one pass (on the device, no host sync until the results are read) ---------


class BatchedDetections:
    """Detections of a batch as fixed-shape tensors on the device.

    Attributes:
        boxes: ``(B, max_detections, 2*D)`` float32; scores ``(B, max_detections)`` float32; labels
            ``(B, max_detections)`` int64; counts ``(B,)`` int64. Image i's detections are the first
            ``counts[i]`` rows, by decreasing score; the rest is padding (zeros, label -1).
    """

    def __init__(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor):
        self.boxes, self.scores, self.labels, self.counts = boxes, scores, labels, counts

    def to_list(self) -> list[dict[str, torch.Tensor]]:
        """Per-image dicts like :func:`select_detections` returns (one host sync: the counts)."""
        counts = self.counts.tolist()
        return [
            {
                "boxes": self.boxes[i, :k].contiguous(),
                "scores": self.scores[i, :k].contiguous(),
                "labels": self.labels[i, :k].contiguous(),
            }
            for i, k in enumerate(counts)
        ]


def _clip_columns(boxes: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``clip_boxes`` without a host-to-device copy of the bounds (so it captures in a CUDA graph);
    the same values: min(max(x, 0), size_k) per column."""
    d = boxes.shape[1] // 2
    return torch.stack([boxes[:, k].clamp(min=0).clamp(max=float(size[k % d])) for k in range(2 * d)], dim=1)


def top_candidates(scores: torch.Tensor, score_floor: float, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``scores (B, M)``: the ``min(k, M)`` best entries, by decreasing score.

    Returns ``(values (B, k'), indices (B, k'), valid (B, k'))``; ``valid`` marks entries above
    ``score_floor`` (the rest are padding when a row has fewer). No host sync.
    """
    k = min(int(k), scores.shape[1])
    masked = torch.where(scores > score_floor, scores, torch.full_like(scores, float("-inf")))
    values, idx = torch.topk(masked, k, dim=1, sorted=True)
    return values, idx, values > score_floor


def select_detections_batched(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_ids: torch.Tensor,
    num_images: int,
    image_size: tuple[int, ...],
    score_floor: float,
    pre_nms_top_k: int,
    nms_iou: float,
    max_detections: int,
    min_box_size: float = 1e-2,
) -> BatchedDetections:
    """:func:`select_detections` for all images of a batch at once.

    Args:
        boxes: ``(N, 2*D)`` candidates of all images; scores ``(N,)``; labels ``(N,)`` int (classes);
            image_ids ``(N,)`` int64 in [0, num_images).
    Same steps and results as :func:`select_detections` per image (score floor, top
    ``pre_nms_top_k`` per image, clip, minimum size, class-wise NMS, best ``max_detections`` per
    image), computed with fixed shapes: candidates are ordered by (image, score descending, index)
    with two stable sorts, the per-image top-k is a rank test, NMS is one
    ``ops.batched_nms_padded`` over groups (image, class), and the per-image cap is another rank
    test. Dropped candidates take part as zero-volume boxes, which never suppress (IoU 0).
    """
    d = boxes.shape[1] // 2
    dev = boxes.device
    n = scores.shape[0]
    m = max(int(max_detections), 0)
    out_boxes = torch.zeros((num_images * m + 1, 2 * d), dtype=torch.float32, device=dev)
    out_scores = torch.zeros((num_images * m + 1,), dtype=torch.float32, device=dev)
    out_labels = torch.full((num_images * m + 1,), -1, dtype=torch.int64, device=dev)
    counts = torch.zeros((num_images,), dtype=torch.int64, device=dev)
    if n == 0 or m == 0 or num_images == 0:
        shape = (num_images, m)
        return BatchedDetections(out_boxes[:-1].view(*shape, 2 * d), out_scores[:-1].view(shape),
                                 out_labels[:-1].view(shape), counts)
    img = image_ids.to(torch.int64)
    sc = scores.float()
    ok = sc > score_floor
    # Order (image, score descending, index): stable sorts from the last key to the first.
    o = torch.argsort(torch.where(ok, sc, torch.full_like(sc, float("-inf"))), descending=True, stable=True)
    o = o[torch.argsort(img[o], stable=True)]
    img_o = img[o]
    per_image = torch.zeros((num_images,), dtype=torch.int64, device=dev).index_add_(0, img, torch.ones_like(img))
    starts = torch.cumsum(per_image, 0) - per_image
    rank = torch.arange(n, device=dev) - starts[img_o]
    b = _clip_columns(boxes[o].float(), image_size)
    valid = ok[o] & (rank < pre_nms_top_k) & ((b[:, d:] - b[:, :d]) >= min_box_size).all(dim=1)
    b = torch.where(valid[:, None], b, torch.zeros_like(b))
    s = torch.where(valid, sc[o], torch.full_like(sc, float("-inf")))
    lab = labels[o].to(torch.int64)
    groups = lab * num_images + img_o  # one group per (class, image); a bijection for any labels
    keep, _ = ops.batched_nms_padded(b, s, groups, nms_iou, n)
    # Kept candidates come by score descending (ties: position); per image, keep the best m.
    kept = keep >= 0
    pos = keep.clamp(min=0)
    kept = kept & valid[pos]
    ki = torch.where(kept, img_o[pos], torch.full_like(pos, num_images))  # dropped last
    srt = torch.argsort(ki, stable=True)
    ki_s, pos_s, kept_s = ki[srt], pos[srt], kept[srt]
    n_kept = torch.zeros((num_images + 1,), dtype=torch.int64, device=dev).index_add_(0, ki, torch.ones_like(ki))
    kstart = torch.cumsum(n_kept, 0) - n_kept
    krank = torch.arange(keep.shape[0], device=dev) - kstart[ki_s]
    take = kept_s & (krank < m)
    slot = torch.where(take, ki_s.clamp(max=num_images - 1) * m + krank.clamp(max=m - 1), num_images * m)
    out_boxes.index_copy_(0, slot, b[pos_s])
    out_scores.index_copy_(0, slot, s[pos_s])
    out_labels.index_copy_(0, slot, lab[pos_s])
    counts = n_kept[:num_images].clamp(max=m)
    shape = (num_images, m)
    return BatchedDetections(out_boxes[:-1].view(*shape, 2 * d), out_scores[:-1].view(shape),
                             out_labels[:-1].view(shape), counts)
