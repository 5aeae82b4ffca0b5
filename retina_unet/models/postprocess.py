"""Post-processing shared by the detectors: score floor, top-k, clipping, class-wise NMS, cap.

NMS goes through ``retina_unet.ops`` so that ``retina_unet.ops.reference_ops()`` switches the whole
pipeline to the pure-PyTorch reference.
"""

from __future__ import annotations

import torch

from retina_unet import ops
from retina_unet.models.coder import clip_boxes


def op(name: str):
    """``retina_unet.ops.<name>``, with an actionable error while an op has not landed."""
    fn = getattr(ops, name, None)
    if fn is None:
        raise RuntimeError(
            f"retina_unet.ops.{name} is not available; the detection ops package must provide it"
        )
    return fn


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
    keep = op("batched_nms")(boxes, scores, labels, nms_iou, max_output=max_detections)
    return {
        "boxes": boxes[keep].contiguous(),
        "scores": scores[keep].contiguous(),
        "labels": labels[keep].to(torch.int64),
    }
