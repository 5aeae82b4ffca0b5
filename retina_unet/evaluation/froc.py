"""FROC: sensitivity at fixed average numbers of false positives per image, and the CPM.

Definitions (``docs/metrics.md`` has the worked example the tests check):

- Pool the matched, surviving predictions (:mod:`retina_unet.evaluation.matching`) over all images.
  An *operating point* is a score threshold s: keep the predictions with score >= s. Its
  sensitivity is TP(s) / n_gt and its false-positive rate is FP(s) / n_images (average false
  positives per image, every evaluated image counts, with or without objects). Thresholds are the
  distinct scores, so tied predictions enter together (no order among equal scores is invented);
  the point (0, 0) (nothing kept) is always on the curve.
- **Sensitivity at f FPs per image** = the largest sensitivity of an operating point whose
  false-positive rate is <= f (a step function: no interpolation between operating points, so it
  is never more optimistic than what a threshold achieves; LUNA16's script interpolates linearly,
  which can only give equal or higher values). When the detector never reaches f false positives
  per image, it is the sensitivity with every surviving prediction kept.
- **CPM** (competition performance metric, LUNA16) = the mean of the sensitivities at
  :data:`FROC_FP_RATES` = 1/8, 1/4, 1/2, 1, 2, 4, 8.
- NaN when there is no ground truth (sensitivity undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def froc_curve(scores, is_tp, n_gt: int, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FROC operating points of a pooled list of predictions.

    Args:
        scores: ``(P,)`` scores of the surviving predictions (any order).
        is_tp: ``(P,)`` bool, whether each one is a true positive.
        n_gt: ground-truth objects (sensitivity denominator).
        n_images: evaluated images (false-positive-rate denominator), >= 1.

    Returns:
        ``(fp_per_image, sensitivity, thresholds)``, each ``(K + 1,)`` for K distinct scores: first
        the empty point (0, 0, +inf), then one point per distinct score in decreasing order; both
        rates are non-decreasing. Sensitivity is NaN throughout when ``n_gt`` is 0.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    if scores.shape != is_tp.shape:
        raise ValueError(f"scores {scores.shape} and is_tp {is_tp.shape} must have the same shape")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    order = np.argsort(-scores, kind="stable")
    s, tp = scores[order], is_tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    last_of_tie = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, bool)  # end of each score group
    tp_k = np.r_[0, ctp[last_of_tie]].astype(np.float64)
    fp_k = np.r_[0, cfp[last_of_tie]].astype(np.float64)
    thresholds = np.r_[np.inf, s[last_of_tie]]
    sens = tp_k / n_gt if n_gt > 0 else np.full(tp_k.shape, np.nan)
    return fp_k / n_images, sens, thresholds


def sensitivity_at(fp_per_image: np.ndarray, sensitivity: np.ndarray, rates: Sequence[float]) -> np.ndarray:
    """Step-function sensitivity at each false-positive rate in ``rates`` (see the module docstring).

    Args:
        fp_per_image, sensitivity: ``(K,)`` operating points from :func:`froc_curve`.
        rates: ``(R,)`` average false positives per image, each >= 0.

    Returns:
        ``(R,)`` float64.
    """
    rates = np.asarray(rates, dtype=np.float64).reshape(-1)
    if np.any(rates < 0):
        raise ValueError(f"rates must be >= 0, got {rates.tolist()}")
    fpi = np.asarray(fp_per_image, dtype=np.float64)
    sens = np.asarray(sensitivity, dtype=np.float64)
    # both arrays are non-decreasing: the best point with fpi <= f is the last one
    idx = np.searchsorted(fpi, rates, side="right") - 1
    return sens[np.maximum(idx, 0)]


def froc(scores, is_tp, n_gt: int, n_images: int, rates: Sequence[float] = FROC_FP_RATES) -> dict:
    """Sensitivities at ``rates`` and their mean (the CPM).

    Returns:
        ``{"fp_rates": [R], "sensitivity": [R], "cpm": float}``; NaN values when ``n_gt`` is 0.
    """
    fpi, sens, _ = froc_curve(scores, is_tp, n_gt, n_images)
    at = sensitivity_at(fpi, sens, rates)
    return {"fp_rates": [float(r) for r in rates], "sensitivity": at.tolist(), "cpm": float(at.mean())}
