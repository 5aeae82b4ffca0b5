"""The paper's stated findings (spec section 2), each checked against our numbers.

Verdicts: "holds", "does not hold", "not measured" (the study lacks the models, tasks or seeds the
check needs). Rules, decided before looking at the data:

- A comparison "X best" holds when X's mean mAP is >= every other group's at *every* measured
  training size (point estimates; the interval is shown next to it).
- "Lead grows as the training set shrinks": the paired difference Retina U-Net - Retina Net
  (per seed) at the smallest size is larger than at the largest size.
- "Collapse": the model's mean mAP at the smallest size is below half its mAP at the largest.
- "No gain" holds unless the paired difference's 95% interval lies entirely above 0 at some size.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from retina_unet.study.report.tables import fmt_ci, paired_differences, summarise

SEG_MODELS = ("retina_unet", "ufrcnn_plus")  # full segmentation supervision (paper)
NON_SEG_MODELS = ("retina_net", "mask_rcnn", "faster_rcnn_plus")  # DetU-Net is in neither group
TWO_STAGE = ("mask_rcnn", "faster_rcnn_plus", "ufrcnn_plus")
ONE_STAGE = ("retina_net", "retina_unet", "detunet")
HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"


@dataclass
class Finding:
    where: str  # e.g. "donuts_shape 2D"
    paper: str  # what the paper states
    ours: str  # our numbers
    verdict: str


def _groups_best(summ: pd.DataFrame, group: tuple[str, ...], others: tuple[str, ...]) -> tuple[str, str] | None:
    """(verdict, numbers) for "best of group >= best of others at every size", or None if unmeasured."""
    parts, ok = [], True
    for n, g in summ.groupby("n_train", sort=False):
        mine, theirs = g[g.model.isin(group)], g[g.model.isin(others)]
        if mine.empty or theirs.empty:
            continue  # this size lacks one side (a partial study): compare where both ran
        bm, bt = mine.loc[mine["mean"].idxmax()], theirs.loc[theirs["mean"].idxmax()]
        ok &= bool(bm["mean"] >= bt["mean"])
        parts.append(f"n={n}: {bm.model} {bm['mean']:.3f} vs {bt.model} {bt['mean']:.3f}")
    if not parts:
        return None
    return (HOLDS if ok else FAILS), "; ".join(parts)


def _paired(df: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    return paired_differences(df, a, b)[1].sort_values("n_train", ascending=False)


def check_findings(df: pd.DataFrame) -> list[Finding]:
    """Every finding for every (task, dim) in ``df`` it applies to; "not measured" rows included."""
    out: list[Finding] = []
    dims = sorted(df["dim"].unique()) if not df.empty else [2]
    for dim in dims:
        ddf = df[df["dim"] == dim]
        for task in ("donuts_shape", "donuts_pattern", "circles_scale"):
            where = f"{task} {dim}D"
            tdf = ddf[ddf["task"] == task]
            summ = summarise(tdf).sort_values("n_train", ascending=False) if not tdf.empty else pd.DataFrame()
            if task.startswith("donuts"):
                out += _donut_findings(where, tdf, summ)
            else:
                out += _circle_findings(where, tdf, summ)
            out.append(_mask_loss_finding(where, tdf))
    return out


def _donut_findings(where: str, tdf: pd.DataFrame, summ: pd.DataFrame) -> list[Finding]:
    res = []
    best = _groups_best(summ, SEG_MODELS, NON_SEG_MODELS) if not summ.empty else None
    res.append(Finding(where, "models with full segmentation supervision (Retina U-Net, U-FRCNN+) are best",
                       best[1] if best else "needs a seg-supervised and a non-seg model", best[0] if best else NOT_MEASURED))
    diff = _paired(tdf, "retina_unet", "retina_net") if not tdf.empty else pd.DataFrame()
    if len(diff) >= 1:
        every = bool((diff["mean"] >= 0).all())
        nums = "; ".join(f"n={r.n_train}: {fmt_ci(r['mean'], r.ci_low, r.ci_high)}" for _, r in diff.iterrows())
        below = diff[diff["mean"] < 0]
        if len(below):
            noise = bool((below["ci_high"] >= 0).all())
            nums += (f" — below 0 at n={', '.join(str(n) for n in below.n_train)}"
                     + (", within noise (95% CI spans 0)" if noise else ", with the 95% CI entirely below 0"))
        res.append(Finding(where, "Retina U-Net >= Retina Net at every training size (paired by seed, U-Net - Net)",
                           nums, HOLDS if every else FAILS))
    else:
        res.append(Finding(where, "Retina U-Net >= Retina Net at every training size", "needs both models", NOT_MEASURED))
    if len(diff) >= 2:
        big, small = diff.iloc[0], diff.iloc[-1]
        res.append(Finding(where, "the segmentation lead grows as the training set shrinks",
                           f"U-Net - Net: {small['mean']:+.3f} at n={small.n_train} vs {big['mean']:+.3f} at n={big.n_train}",
                           HOLDS if small["mean"] > big["mean"] else FAILS))
    else:
        res.append(Finding(where, "the segmentation lead grows as the training set shrinks",
                           "needs both models at >= 2 training sizes", NOT_MEASURED))
    nonseg = summ[summ.model.isin(NON_SEG_MODELS)] if not summ.empty else summ
    if not summ.empty and not nonseg.empty and summ["n_train"].nunique() >= 2:
        parts, ok = [], True
        for model, g in nonseg.groupby("model"):
            g = g.sort_values("n_train")
            lo, hi = g.iloc[0], g.iloc[-1]
            ok &= bool(lo["mean"] < 0.5 * hi["mean"])
            parts.append(f"{model}: {lo['mean']:.3f} at n={lo.n_train} vs {hi['mean']:.3f} at n={hi.n_train}")
        res.append(Finding(where, "models without segmentation supervision collapse at the smallest sizes "
                           "(rule: < half their mAP at the largest size)", "; ".join(parts), HOLDS if ok else FAILS))
    else:
        res.append(Finding(where, "models without segmentation supervision collapse at the smallest sizes",
                           "needs a non-seg model at >= 2 sizes", NOT_MEASURED))
    return res


def _circle_findings(where: str, tdf: pd.DataFrame, summ: pd.DataFrame) -> list[Finding]:
    res = []
    diff = _paired(tdf, "retina_unet", "retina_net") if not tdf.empty else pd.DataFrame()
    if len(diff):
        gain = bool((diff["ci_low"] > 0).any())
        nums = "; ".join(f"n={r.n_train}: {fmt_ci(r['mean'], r.ci_low, r.ci_high)}" for _, r in diff.iterrows())
        res.append(Finding(where, "segmentation supervision brings no gain (U-Net - Net; fails only if a 95% CI is "
                           "entirely > 0)", nums, FAILS if gain else HOLDS))
    else:
        res.append(Finding(where, "segmentation supervision brings no gain", "needs Retina U-Net and Retina Net",
                           NOT_MEASURED))
    best = _groups_best(summ, TWO_STAGE, ONE_STAGE) if not summ.empty else None
    res.append(Finding(where, "two-stage detectors do best", best[1] if best else "needs a two-stage and a one-stage model",
                       best[0] if best else NOT_MEASURED))
    return res


def _mask_loss_finding(where: str, tdf: pd.DataFrame) -> Finding:
    paper = "Mask R-CNN's mask loss brings no gain over Faster R-CNN+ with little data (smallest size)"
    diff = _paired(tdf, "mask_rcnn", "faster_rcnn_plus") if not tdf.empty else pd.DataFrame()
    if diff.empty:
        return Finding(where, paper, "needs Mask R-CNN and Faster R-CNN+", NOT_MEASURED)
    r = diff.iloc[-1]
    gain = bool(r.ci_low > 0)
    return Finding(where, paper, f"Mask - Faster at n={r.n_train}: {fmt_ci(r['mean'], r.ci_low, r.ci_high)}",
                   FAILS if gain else HOLDS)
