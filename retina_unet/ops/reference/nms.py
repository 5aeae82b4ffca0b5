"""Float64 pure-PyTorch greedy NMS: the test oracle for ``retina_unet.ops.nms`` / ``batched_nms``.

Written as the definition reads (docs/conventions.md, "NMS"), not for speed: candidates in order of score
descending (ties: lower index first); a candidate is kept iff no kept box of its group has IoU >
``iou_threshold`` with it; stop after ``max_output`` kept boxes.
"""

from __future__ import annotations

import torch

from retina_unet.ops.reference.boxes import box_iou_reference


def batched_nms_reference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    max_output: int | None = None,
) -> torch.Tensor:
    """Greedy NMS where only boxes of the same group suppress each other. Returns int64 indices."""
    n = boxes.shape[0]
    keep: list[int] = []
    if n == 0 or max_output == 0:
        return torch.tensor(keep, dtype=torch.int64, device=boxes.device)
    b = boxes.double()
    # +0.0 turns -0.0 into +0.0; a stable descending sort keeps tied scores in index order.
    order = torch.sort(scores.double() + 0.0, descending=True, stable=True).indices.tolist()
    suppressed = [False] * n
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        if max_output is not None and len(keep) >= max_output:
            break
        iou = box_iou_reference(b[i : i + 1], b)[0]
        hit = (iou > iou_threshold) & (groups == groups[i])
        for j in torch.nonzero(hit).flatten().tolist():
            suppressed[j] = True
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def nms_reference(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_output: int | None = None
) -> torch.Tensor:
    """Greedy NMS over 2D (N, 4) or 3D (N, 6) boxes in float64. Returns int64 indices."""
    groups = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    return batched_nms_reference(boxes, scores, groups, iou_threshold, max_output)
