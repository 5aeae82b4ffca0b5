"""Per-image ("patient-level") scores and the list of detections, as CSV rows.

Every image is one case. Built on :func:`retina_unet.evaluation.matching.match_dataset`, so a
"found" object here is exactly a true positive of the AP computation at the same thresholds.
Columns of :func:`per_case_rows` (also defined in ``docs/metrics.md``):

- ``case``: position of the image in the evaluated split (or the id given).
- ``n_gt``; ``gt_classes``, ``gt_found``, ``gt_best_iou``: per ground-truth object, ';'-joined in
  the target's order: its class; 1 when a surviving prediction of the same class matched it at
  IoU > ``iou_threshold`` (a true positive), else 0; the best IoU any surviving prediction of its
  class reaches with it (0 when none; above the threshold for a missed object only when every
  prediction reaching it took another object of the case, so never in one-object images).
- ``n_found``, ``n_missed``, ``all_found`` (1 when nothing was missed; 1 for an image without objects).
- ``n_det`` surviving predictions (score > ``score_threshold``), ``n_tp``, ``n_fp`` (= n_det - n_tp).
- ``best_iou``: the highest ``gt_best_iou`` of the case (empty without ground truth).
- ``top_class``, ``top_score``: the highest-scoring surviving prediction (empty when none).
- ``score_c<k>``: the case's patient-level score for class k (max surviving score, 0 when none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retina_unet.evaluation.matching import _np, match_dataset


def _labels(target: dict) -> np.ndarray:
    return _np(target["labels"]).reshape(-1).astype(np.int64)


def per_case_rows(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
    case_ids: Sequence | None = None,
) -> tuple[list[dict], list[dict]]:
    """Per-case rows and per-detection rows (see the module docstring for the case columns).

    Args:
        predictions / targets: one dict per image (``boxes (P, 2*D)``, ``scores (P,)``, ``labels (P,)``
            / ``boxes (G, 2*D)``, ``labels (G,)``).
        num_classes: foreground classes. case_ids: ``(n,)`` names for the cases (default 0..n-1).

    Returns:
        ``(cases, detections)``: ``cases`` has one dict per image; ``detections`` one per surviving
        prediction (``case``, ``rank`` in the case by score, ``class``, ``score``, ``tp`` 0/1,
        ``iou`` = best IoU with an object of its class, ``matched_gt`` = position of the object it
        took in the case's targets or -1, ``box`` = space-joined coordinates).
    """
    n = len(targets)
    if case_ids is not None and len(case_ids) != n:
        raise ValueError(f"case_ids has {len(case_ids)} entries, expected one per image ({n})")
    ids = list(range(n)) if case_ids is None else list(case_ids)
    per_class = {c: match_dataset(predictions, targets, c, iou_threshold, score_threshold)
                 for c in range(1, num_classes + 1)}
    cases, detections = [], []
    for i in range(n):
        labels = _labels(targets[i])
        valid = labels > 0
        found = np.zeros(labels.size, dtype=bool)
        best = np.zeros(labels.size)
        dets = []
        row = {"case": ids[i]}
        for c, matches in per_class.items():
            m = matches[i]
            gt_pos = np.flatnonzero(labels == c)  # class-subset position -> target position
            found[gt_pos[m.matched_gt[m.is_tp]]] = True
            best[gt_pos] = m.gt_best_iou
            boxes = _np(predictions[i]["boxes"])
            for k in range(m.scores.size):
                g = int(m.matched_gt[k])
                dets.append({"case": ids[i], "class": c, "score": round(float(m.scores[k]), 6), "tp": int(m.is_tp[k]),
                             "iou": round(float(m.pred_best_iou[k]), 4), "matched_gt": int(gt_pos[g]) if g >= 0 else -1,
                             "box": " ".join(f"{v:g}" for v in np.asarray(boxes[m.index[k]], np.float64))})
            row[f"score_c{c}"] = round(float(m.scores[0]), 6) if m.scores.size else 0.0
        dets.sort(key=lambda d: -d["score"])
        for rank, d in enumerate(dets):
            d["rank"] = rank
        n_tp = sum(d["tp"] for d in dets)
        g_labels, g_found, g_best = labels[valid], found[valid], best[valid]
        row.update(
            n_gt=int(valid.sum()),
            gt_classes=";".join(str(int(v)) for v in g_labels),
            gt_found=";".join(str(int(v)) for v in g_found),
            gt_best_iou=";".join(f"{v:.4f}" for v in g_best),
            n_found=int(g_found.sum()),
            n_missed=int((~g_found).sum()),
            all_found=int(bool(g_found.all())),
            n_det=len(dets),
            n_tp=n_tp,
            n_fp=len(dets) - n_tp,
            best_iou=f"{g_best.max():.4f}" if g_best.size else "",
            top_class=dets[0]["class"] if dets else "",
            top_score=dets[0]["score"] if dets else "",
        )
        cases.append(_ordered(row, num_classes))
        detections.extend({k: d[k] for k in DETECTION_COLUMNS} for d in dets)
    return cases, detections


CASE_COLUMNS = ("case", "n_gt", "gt_classes", "gt_found", "gt_best_iou", "n_found", "n_missed", "all_found",
                "n_det", "n_tp", "n_fp", "best_iou", "top_class", "top_score")
DETECTION_COLUMNS = ("case", "rank", "class", "score", "tp", "iou", "matched_gt", "box")


def _ordered(row: dict, num_classes: int) -> dict:
    return {**{k: row[k] for k in CASE_COLUMNS}, **{f"score_c{c}": row[f"score_c{c}"] for c in range(1, num_classes + 1)}}
