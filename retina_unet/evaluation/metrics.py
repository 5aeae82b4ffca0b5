"""Every detection metric of a run in one dict: AP over an IoU grid, the COCO-style average, FROC/CPM.

Builds on :func:`retina_unet.evaluation.matching.match_dataset` (the paper's matching, run once per
IoU threshold) and :func:`retina_unet.evaluation.ap.evaluate_detections` (the paper's numbers at the
primary threshold, unchanged). ``docs/metrics.md`` defines each number.

- **AP at IoU > t** for t in an IoU grid, per class, and mAP(t) = mean over classes.
- **COCO-style AP** = the mean of AP(t) over the grid. COCO averages 0.5:0.05:0.95; our default grid
  is 0.1:0.1:0.5 (:data:`PAPER_IOU_GRID`) because the paper's primary threshold is 0.1;
  :data:`COCO_IOU_GRID` is the standard one, selectable as the grid and always reported too
  (``coco_standard``: it tells localisation quality apart where AP at 0.1..0.5 saturates). Matching
  stays strict (IoU > t; COCO uses >= t).
- **FROC** per class and overall (all classes pooled; a prediction is a TP only when it matches an
  object of its own class) at the primary IoU threshold; CPM = mean sensitivity over the FP rates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from retina_unet.evaluation.ap import (
    RECALL_POINTS,
    average_precision,
    evaluate_detections,
    interpolated_precision,
)
from retina_unet.evaluation.froc import FROC_FP_RATES, froc, froc_curve, sensitivity_at
from retina_unet.evaluation.matching import ImageClassMatches, match_dataset

PAPER_IOU_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
COCO_IOU_GRID: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
IOU_GRIDS = {"paper": PAPER_IOU_GRID, "coco": COCO_IOU_GRID}
# FP-per-image rates at which the stored FROC curve is sampled (for figures): 2^(k/4), 1/16 .. 16.
FROC_CURVE_RATES: tuple[float, ...] = tuple(2.0 ** (k / 4) for k in range(-16, 17))


def iou_grid(grid: str | Sequence[float]) -> tuple[float, ...]:
    """An IoU grid by name (``"paper"`` = 0.1:0.5, ``"coco"`` = 0.5:0.95) or as given (each in [0, 1))."""
    if isinstance(grid, str):
        if grid not in IOU_GRIDS:
            raise ValueError(f"iou grid must be one of {sorted(IOU_GRIDS)} or a list of floats, got {grid!r}")
        return IOU_GRIDS[grid]
    out = tuple(float(t) for t in grid)
    if not out or any(not 0.0 <= t < 1.0 for t in out):
        raise ValueError(f"iou grid must be a non-empty list of thresholds in [0, 1), got {list(grid)}")
    return out


def pooled(matches: Sequence[ImageClassMatches]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(scores (P,), is_tp (P,), n_gt)`` of per-image matches pooled over a dataset."""
    if not matches:
        return np.zeros(0), np.zeros(0, bool), 0
    return (np.concatenate([m.scores for m in matches]), np.concatenate([m.is_tp for m in matches]),
            int(sum(m.n_gt for m in matches)))


def detection_metrics(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
    grid: str | Sequence[float] = "paper",
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> dict:
    """All metrics of a set of detections (2D or 3D), JSON-ready (NaN written as None).

    Args:
        predictions: one dict per image with ``boxes (P, 2*D)``, ``scores (P,)``, ``labels (P,)``.
        targets: one dict per image with ``boxes (G, 2*D)``, ``labels (G,)``.
        num_classes: foreground classes (labels 1..num_classes).
        iou_threshold: the primary threshold (the paper's 0.1): the paper's numbers, FROC, PR figure.
        score_threshold: predictions with score <= this are dropped everywhere.
        grid: the IoU grid of the COCO-style average (see :func:`iou_grid`).
        fp_rates: FROC false-positive rates (average FPs per image).

    Returns:
        ``paper`` (:func:`evaluate_detections` at ``iou_threshold``: ``ap``, ``mAP``,
        ``patient_ap``, ``patient_mAP``, counts), ``ap_by_iou`` {t: {class: AP, "mAP": mAP(t)}} for
        the grid, the COCO grid and ``iou_threshold``, ``coco_style`` {``grid``, ``ap`` {class: mean
        AP over the grid}, ``mAP``}, ``coco_standard`` (the same over :data:`COCO_IOU_GRID`, always,
        to compare localisation with COCO-style numbers elsewhere), ``froc`` {class or
        "all": {``fp_rates``, ``sensitivity``, ``cpm``}}, ``operating_point`` {class or "all":
        sensitivity and FPs per image with every surviving prediction kept}, ``curves`` (``pr``:
        interpolated precision at the 101 recall points per IoU threshold and class; ``froc``:
        step-function sensitivity at :data:`FROC_CURVE_RATES`), and the settings.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
    thresholds = iou_grid(grid)
    n_images = len(targets)
    if n_images == 0:
        raise ValueError("targets is empty: nothing to evaluate")
    classes = list(range(1, num_classes + 1))
    paper = evaluate_detections(predictions, targets, num_classes, iou_threshold, score_threshold)

    by_iou: dict[str, dict] = {}
    pr: dict[str, dict] = {}
    for t in sorted(set(thresholds) | set(COCO_IOU_GRID) | {float(iou_threshold)}):
        row, curves = {}, {}
        for cls in classes:
            scores, is_tp, n_gt = pooled(match_dataset(predictions, targets, cls, t, score_threshold))
            row[str(cls)] = _clean(average_precision(scores, is_tp, n_gt))
            curves[str(cls)] = _clean_list(interpolated_precision(scores, is_tp, n_gt).round(4))
        row["mAP"] = _mean(row[str(c)] for c in classes)
        by_iou[_key(t)], pr[_key(t)] = row, curves
    coco_ap = {str(c): _mean(by_iou[_key(t)][str(c)] for t in thresholds) for c in classes}
    std_ap = {str(c): _mean(by_iou[_key(t)][str(c)] for t in COCO_IOU_GRID) for c in classes}

    froc_out, froc_curves, operating = {}, {}, {}
    per_class = {str(c): pooled(match_dataset(predictions, targets, c, iou_threshold, score_threshold))
                 for c in classes}
    per_class["all"] = tuple(np.concatenate([v[i] for v in per_class.values()]) for i in (0, 1)) + (
        sum(v[2] for v in per_class.values()),)
    for name, (scores, is_tp, n_gt) in per_class.items():
        f = froc(scores, is_tp, n_gt, n_images, fp_rates)
        froc_out[name] = {"fp_rates": f["fp_rates"], "sensitivity": _clean_list(f["sensitivity"]),
                          "cpm": _clean(f["cpm"])}
        fpi, sens, _ = froc_curve(scores, is_tp, n_gt, n_images)
        froc_curves[name] = _clean_list(sensitivity_at(fpi, sens, FROC_CURVE_RATES))
        operating[name] = {"sensitivity": _clean(sens[-1]), "fp_per_image": float(fpi[-1]),
                           "n_detections": int(scores.size), "n_gt": int(n_gt)}
    out = {
        "n_images": n_images,
        "num_classes": num_classes,
        "iou_threshold": float(iou_threshold),
        "score_threshold": float(score_threshold),
        "paper": {k: paper[k] for k in ("ap", "mAP", "patient_ap", "patient_mAP", "n_gt", "n_tp", "n_fp")},
        "ap_by_iou": by_iou,
        "coco_style": {"grid": [float(t) for t in thresholds], "ap": coco_ap,
                       "mAP": _mean(coco_ap[str(c)] for c in classes)},
        "coco_standard": {"grid": list(COCO_IOU_GRID), "ap": std_ap, "mAP": _mean(std_ap[str(c)] for c in classes)},
        "froc": froc_out,
        "operating_point": operating,
        "curves": {
            "pr": {"recall": RECALL_POINTS.round(2).tolist(), "precision": pr},
            "froc": {"fp_per_image": list(FROC_CURVE_RATES), "sensitivity": froc_curves},
        },
    }
    return json.loads(json.dumps(out))  # string keys, plain types


def _key(t: float) -> str:
    """A stable JSON key for an IoU threshold: ``0.1`` -> ``"0.1"``, ``0.55`` -> ``"0.55"``."""
    return f"{float(t):g}"


def _clean(v) -> float | None:
    return None if v is None or (isinstance(v, float | np.floating) and math.isnan(v)) else float(v)


def _clean_list(values) -> list[float | None]:
    return [_clean(float(v)) for v in np.asarray(values, dtype=np.float64)]


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None
