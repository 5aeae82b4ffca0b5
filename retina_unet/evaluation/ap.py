"""Average precision: per class (COCO 101-point), mAP, and patient-level AP (toy protocol section 4).

Definitions:

- **AP of a class**: pool the matched predictions of that class over all images
  (:mod:`retina_unet.evaluation.matching`), sort by decreasing score (stable), and accumulate TP and
  FP counts. recall_i = TP_i / n_gt, precision_i = TP_i / (TP_i + FP_i). Precision is made monotone
  (precision_i = max over j >= i), then sampled at the 101 recall points r = 0, 0.01, ..., 1: at
  each r the precision of the first ranked prediction with recall >= r, or 0 when recall never gets
  there. AP = the mean of the 101 samples (COCO's interpolation). A class with no ground truth in
  the evaluated images has AP = NaN (undefined) and is left out of the mAP.
- **mAP** = the mean of the defined per-class APs ("mAP10" in the paper with IoU > 0.1).
- **Patient-level AP of a class**: every image is one "patient"; its score for the class is the
  maximum score of its surviving predictions of that class, its label is whether the image
  contains an object of that class. AP is the same 101-point AP over the ranking of the images that
  have a surviving prediction of the class; recall counts all images containing the class (an
  image without any prediction is a miss, never a hit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retina_unet.evaluation.matching import match_dataset

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> float:
    """COCO-style 101-point AP of a ranked list of predictions.

    Args:
        scores: ``(P,)`` prediction scores (any order; ranked here, stable on ties).
        is_tp: ``(P,)`` bool, whether each prediction is a true positive.
        n_gt: the number of ground-truth objects (recall denominator).

    Returns:
        AP in [0, 1]; NaN when ``n_gt`` is 0.
    """
    if n_gt <= 0:
        return float("nan")
    return float(interpolated_precision(scores, is_tp, n_gt).mean())


def interpolated_precision(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> np.ndarray:
    """The monotone precision sampled at :data:`RECALL_POINTS` (what :func:`average_precision` averages).

    Args: as :func:`average_precision`. Returns: ``(101,)`` float64; NaN everywhere when ``n_gt`` is 0.
    """
    if n_gt <= 0:
        return np.full(RECALL_POINTS.shape, np.nan)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    if scores.size == 0:
        return np.zeros(RECALL_POINTS.shape)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone (non-increasing)
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return np.where(idx < recall.size, precision[np.minimum(idx, recall.size - 1)], 0.0)


def evaluate_detections(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
) -> dict:
    """Per-class AP, mAP and patient-level AP of detections on a set of images (2D or 3D).

    Args:
        predictions: one dict per image with ``boxes (P, 2*D)``, ``scores (P,)``, ``labels (P,)``
            (classes 1..num_classes); tensors or arrays.
        targets: one dict per image with ``boxes (G, 2*D)`` and ``labels (G,)``; label 0 or
            negative entries are ignored (padding).
        num_classes: foreground classes (labels 1..num_classes).
        iou_threshold: match needs IoU > this. score_threshold: predictions <= this are dropped.

    Returns:
        JSON-serialisable dict: ``ap`` {class: AP}, ``mAP``, ``patient_ap`` {class: AP},
        ``patient_mAP``, ``n_gt`` {class: count}, ``n_tp``/``n_fp`` {class: count} (counts over all
        images), ``n_images``, ``iou_threshold``, ``score_threshold``. NaN APs are reported as None.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    out: dict = {"ap": {}, "patient_ap": {}, "n_gt": {}, "n_tp": {}, "n_fp": {}}
    for cls in range(1, num_classes + 1):
        matches = match_dataset(predictions, targets, cls, iou_threshold, score_threshold)
        img_scores = [m.scores.max() if m.scores.size else 0.0 for m in matches]
        img_labels = [m.n_gt > 0 for m in matches]
        scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
        is_tp = np.concatenate([m.is_tp for m in matches]) if matches else np.zeros(0, bool)
        n_gt = sum(m.n_gt for m in matches)
        out["ap"][cls] = average_precision(scores, is_tp, n_gt)
        out["patient_ap"][cls] = patient_level_ap(np.array(img_scores), np.array(img_labels, bool))
        out["n_gt"][cls] = int(n_gt)
        out["n_tp"][cls] = int(is_tp.sum())
        out["n_fp"][cls] = int((~is_tp).sum())
    out["mAP"] = _nanmean(out["ap"].values())
    out["patient_mAP"] = _nanmean(out["patient_ap"].values())
    out["ap"] = {c: _none_if_nan(v) for c, v in out["ap"].items()}
    out["patient_ap"] = {c: _none_if_nan(v) for c, v in out["patient_ap"].items()}
    out.update(n_images=len(targets), iou_threshold=iou_threshold, score_threshold=score_threshold)
    return out


def patient_level_ap(image_scores: np.ndarray, image_has_class: np.ndarray) -> float:
    """101-point AP of images ranked by their max score for a class (see module docstring).

    Args:
        image_scores: ``(n,)`` max surviving score per image, 0 (or less) for images without one.
        image_has_class: ``(n,)`` bool, whether the image contains the class.
    """
    image_has_class = np.asarray(image_has_class, dtype=bool)
    image_scores = np.asarray(image_scores, np.float64)
    ranked = image_scores > 0
    return average_precision(image_scores[ranked], image_has_class[ranked], int(image_has_class.sum()))


def _nanmean(values) -> float | None:
    v = np.array([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    return float(v.mean()) if v.size else None


def _none_if_nan(v: float) -> float | None:
    return None if v is None or np.isnan(v) else float(v)
