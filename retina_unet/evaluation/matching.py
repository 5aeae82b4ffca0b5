"""Matching predictions to ground truth for one image and one class (toy protocol section 4).

Definitions (every number the evaluation reports builds on these):

- A prediction *survives* when its score is > ``score_threshold`` (default 0.1, strict); the
  others are dropped before matching (they are neither true nor false positives).
- A surviving prediction *overlaps* a ground-truth box of the same class when their IoU is
  > ``iou_threshold`` (default 0.1, strict: IoU exactly 0.1 is not a match). IoU is area IoU in 2D
  and volumetric IoU in 3D, computed by :func:`retina_unet.ops.box_iou`.
- Greedy matching in decreasing score order (ties: lower index first): each prediction takes the
  still-unmatched ground truth it overlaps most; that prediction is a *true positive* (TP). So
  among several predictions overlapping one object the highest-scoring one is the TP and the
  others are *false positives* (FP), as are predictions overlapping nothing.
- Ground truth that no prediction takes is a *miss* (a false negative).
- Diagnostics (not used by AP): each surviving prediction's best IoU with any ground truth of the
  class, each ground truth's best IoU with any surviving prediction of the class, and which ground
  truth each true positive took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from retina_unet.ops import box_iou


@dataclass(frozen=True)
class ImageClassMatches:
    """Result of matching one image's predictions of one class.

    Attributes:
        scores: ``(P,)`` float64 scores of the surviving predictions, in decreasing order.
        is_tp: ``(P,)`` bool, True where that prediction is a true positive.
        n_gt: number of ground-truth boxes of the class in the image.
        index: ``(P,)`` int64, the input position of each surviving prediction (same order as
            ``scores``), so callers can fetch its box.
        matched_gt: ``(P,)`` int64, the ground truth each true positive took, -1 for false positives.
        pred_best_iou: ``(P,)`` float64, best IoU of each prediction with any ground truth (0 if none).
        gt_best_iou: ``(G,)`` float64, best IoU of each ground truth with any surviving prediction
            (0 if none), whether or not that prediction was its match.
    """

    scores: np.ndarray
    is_tp: np.ndarray
    n_gt: int
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    matched_gt: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pred_best_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gt_best_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_tp(self) -> int:
        return int(self.is_tp.sum())

    @property
    def n_fp(self) -> int:
        return int((~self.is_tp).sum())

    @property
    def n_missed(self) -> int:
        return self.n_gt - self.n_tp


def _as_boxes(boxes, width: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not torch.is_tensor(boxes) else boxes)
    t = t.detach().to("cpu", torch.float64)
    if t.numel() == 0:
        return t.reshape(0, width or 4)
    if t.dim() != 2 or t.shape[1] not in (4, 6):
        raise ValueError(f"boxes must have shape (N, 4) or (N, 6), got {tuple(t.shape)}")
    return t


def match_image_class(
    pred_boxes,
    pred_scores,
    gt_boxes,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
) -> ImageClassMatches:
    """Match one image's predictions of one class to that image's ground truth of the same class.

    Args:
        pred_boxes: ``(P, 2*D)`` boxes in our convention (tensor or array).
        pred_scores: ``(P,)`` scores.
        gt_boxes: ``(G, 2*D)`` ground-truth boxes.
        iou_threshold: a match needs IoU > this (strict).
        score_threshold: predictions with score <= this are dropped.

    Returns:
        :class:`ImageClassMatches` (see the module docstring for the definitions).
    """
    raw = np.asarray(pred_scores.detach().cpu() if torch.is_tensor(pred_scores) else pred_scores).reshape(-1)
    if not np.issubdtype(raw.dtype, np.floating):
        raw = raw.astype(np.float64)
    # compare in the scores' own precision: a float32 score "0.1" is dropped like the float64 0.1
    keep = raw > raw.dtype.type(score_threshold)
    scores = raw.astype(np.float64)
    gt = _as_boxes(gt_boxes)
    pb = _as_boxes(pred_boxes, gt.shape[1] if gt.numel() else None)
    if pb.shape[0] != scores.shape[0]:
        raise ValueError(f"{pb.shape[0]} predicted boxes but {scores.shape[0]} scores")
    index = np.flatnonzero(keep)
    scores, pb = scores[keep], pb[torch.from_numpy(keep)]
    order = np.argsort(-scores, kind="stable")
    scores, pb, index = scores[order], pb[torch.from_numpy(order)], index[order].astype(np.int64)
    n_pred, n_gt = scores.shape[0], int(gt.shape[0])
    is_tp = np.zeros(n_pred, dtype=bool)
    matched = np.full(n_pred, -1, dtype=np.int64)
    if n_gt == 0 or n_pred == 0:
        return ImageClassMatches(scores, is_tp, n_gt, index, matched, np.zeros(n_pred), np.zeros(n_gt))
    if pb.shape[1] != gt.shape[1]:
        raise ValueError(f"predicted boxes are {pb.shape[1] // 2}D but ground truth is {gt.shape[1] // 2}D")
    iou = box_iou(pb, gt).numpy()  # (P, G)
    taken = np.zeros(n_gt, dtype=bool)
    for p in range(n_pred):
        cand = np.where(~taken & (iou[p] > iou_threshold), iou[p], -1.0)
        g = int(np.argmax(cand))
        if cand[g] > iou_threshold:
            taken[g] = True
            is_tp[p] = True
            matched[p] = g
    return ImageClassMatches(scores, is_tp, n_gt, index, matched, iou.max(1), iou.max(0))


def match_dataset(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    cls: int,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
) -> list[ImageClassMatches]:
    """:func:`match_image_class` for class ``cls`` on every image of a dataset.

    Args:
        predictions: one dict per image with ``boxes (P, 2*D)``, ``scores (P,)``, ``labels (P,)``.
        targets: one dict per image with ``boxes (G, 2*D)`` and ``labels (G,)``.
        cls: the class (1..C); predictions and ground truth of other classes are ignored.

    Returns:
        One :class:`ImageClassMatches` per image; ``index`` refers to the image's full prediction list.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    out = []
    for pred, tgt in zip(predictions, targets, strict=True):
        labels = _np(pred["labels"]).reshape(-1)
        boxes = _np(pred["boxes"])
        sel = labels == cls
        m = match_image_class(
            boxes[sel] if boxes.size else boxes, _np(pred["scores"]).reshape(-1)[sel],
            _class_gt(tgt, cls), iou_threshold, score_threshold,
        )
        out.append(_remap(m, np.flatnonzero(sel)))
    return out


def _remap(m: ImageClassMatches, positions: np.ndarray) -> ImageClassMatches:
    """``m`` with ``index`` mapped from class-subset positions to the image's full list."""
    return ImageClassMatches(m.scores, m.is_tp, m.n_gt, positions[m.index].astype(np.int64), m.matched_gt,
                             m.pred_best_iou, m.gt_best_iou)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _class_gt(target: dict, cls: int) -> np.ndarray:
    """``(G, 2*D)`` ground-truth boxes of class ``cls`` (labels <= 0 are padding and never match)."""
    labels = _np(target["labels"]).reshape(-1)
    boxes = _np(target["boxes"])
    if boxes.size == 0:
        return boxes.reshape(0, boxes.shape[-1] if boxes.ndim == 2 else 4)
    return boxes[labels == cls]
