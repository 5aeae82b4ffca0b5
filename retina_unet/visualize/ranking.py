"""Per-case scores, and the best / worst grid of a set of cases.

**Case score** of one image (in [-1, 1], higher is better), built on the evaluation's definitions
(:mod:`retina_unet.evaluation.matching`: predictions survive when score > ``score_threshold``,
overlap needs IoU > ``iou_threshold``, greedy TP/FP matching per class):

- each ground-truth object g of class c earns ``q_g = max(score_p * IoU(p, g))`` over the surviving
  predictions p of class c that overlap it, or 0 when none does (a miss, or only wrong-class boxes);
- the case loses the highest score of its false positives (0 when it has none);
- case score = mean of the ``q_g`` (0 for an image without objects) minus that penalty.

So a perfect case (every object found with a confident, tight box, no confident false alarm) nears
1; a missed object or a confident false positive pulls it down; a confident wrong-class detection
of an object does both. *Best* cases are the highest scores, *worst* the lowest (ties: lower image
index first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retina_unet.atomic_io import write_bytes_atomic
from retina_unet.evaluation import match_image_class
from retina_unet.ops import box_iou
from retina_unet.visualize.overlays import LEGEND, case_panels, render_png


@dataclass(frozen=True)
class CaseScore:
    """One image's score (see the module doc) and its matching counts."""

    index: int
    score: float
    n_gt: int
    n_tp: int
    n_fp: int
    max_fp_score: float

    @property
    def n_missed(self) -> int:
        return self.n_gt - self.n_tp


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def case_score(
    index: int,
    pred: dict,
    target: dict,
    num_classes: int,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
) -> CaseScore:
    """Score one case. pred: ``boxes (P, 2*D), scores (P,), labels (P,)``; target: ``boxes (G, 2*D), labels (G,)``."""
    pb, ps, pl = (
        _np(pred["boxes"]).astype(np.float64),
        _np(pred["scores"]).reshape(-1),
        _np(pred["labels"]).reshape(-1),
    )
    gb, gl = _np(target["boxes"]).astype(np.float64), _np(target["labels"]).reshape(-1)
    quality, n_tp, n_fp, max_fp = [], 0, 0, 0.0
    for cls in range(1, num_classes + 1):
        sp, sg = pl == cls, gl == cls
        m = match_image_class(pb[sp], ps[sp], gb[sg], iou_threshold, score_threshold)
        n_tp, n_fp = n_tp + m.n_tp, n_fp + m.n_fp
        if m.n_fp:
            max_fp = max(max_fp, float(m.scores[~m.is_tp].max()))
        if not sg.any():
            continue
        keep = sp & (ps > np.asarray(score_threshold, dtype=ps.dtype))
        if not keep.any():
            quality.extend([0.0] * int(sg.sum()))
            continue
        iou = box_iou(torch.from_numpy(pb[keep]), torch.from_numpy(gb[sg])).numpy()  # (P, G)
        q = np.where(iou > iou_threshold, iou * ps[keep].astype(np.float64)[:, None], 0.0).max(axis=0)
        quality.extend(q.tolist())
    mean_q = float(np.mean(quality)) if quality else 0.0
    return CaseScore(index, mean_q - max_fp, len(gl), n_tp, n_fp, max_fp)


def rank_cases(scores: Sequence[CaseScore], n: int) -> tuple[list[CaseScore], list[CaseScore]]:
    """(best ``n``, worst ``n``): highest and lowest case scores; disjoint when there are < 2n cases."""
    if n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    best_first = sorted(scores, key=lambda c: (-c.score, c.index))
    worst_first = sorted(scores, key=lambda c: (c.score, c.index))
    best = best_first[:n]
    taken = {c.index for c in best}
    worst = [c for c in worst_first if c.index not in taken][:n]
    return best, worst


def draw_best_worst(
    path: str | Path,
    best: Sequence[tuple[CaseScore, dict]],
    worst: Sequence[tuple[CaseScore, dict]],
    spatial_dims: int,
    title: str = "",
    score_threshold: float = 0.1,
    focus_px: int | None = 96,
) -> Path:
    """Write a two-row grid PNG (best cases on top, worst below) to ``path``.

    Each case is ``(CaseScore, {"image", "name", "gt", "pred", "seg"})`` with the arguments of
    :func:`retina_unet.visualize.overlays.draw_case`. A 2D case is one panel; a 3D case two (the
    slice through its first object and the maximum projection). ``focus_px``: zoom each panel to a
    window of at least this many pixels around the case's first object (None: whole images).
    """
    rows = []
    for label, cases in (("best", best), ("worst", worst)):
        row = []
        for rank, (cs, case) in enumerate(cases, 1):
            panels = case_panels(
                case["image"],
                spatial_dims,
                case.get("gt"),
                case.get("pred"),
                case.get("seg"),
                score_threshold,
                max_objects=1,
                focus_px=focus_px,
            )
            head = (
                f"{label} {rank}: {case.get('name', cs.index)}  case score {cs.score:.2f}  "
                f"TP {cs.n_tp} FP {cs.n_fp} miss {cs.n_missed}"
            )
            if spatial_dims == 3:  # (slice, projection): the slice's caption moves right
                panels[-1].caption = f"left: {panels[0].caption}; here: max projection"
            panels[0].caption = head
            row.extend(panels)
        rows.append(row)
    if not any(rows):
        raise ValueError("best / worst: expected at least one case")
    zoom = f" (zoomed to >= {focus_px} px around each case's first object)" if focus_px else ""
    header = f"{title}{zoom}\n{LEGEND}" if title else LEGEND + zoom
    return write_bytes_atomic(path, render_png(rows, header))
