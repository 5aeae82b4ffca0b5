"""The paper's claims on the toys (spec section 2), each checked with a paired interval and a verdict.

Every rule below was fixed in code before any study data was looked at; nothing here is tuned to a
result. A point estimate alone never supports a claim.

**Verdicts.** Each claim is turned into one statistic per seed (a difference of test mAP between
models or sizes, paired by seed: same training subset, same initialisation seed) and the 95%
Student-t interval of its mean over seeds (:func:`retina_unet.study.report.tables.t_interval`).

- *Directional* claims ("X beats Y", "the lead grows") -- the paper's direction is a sign:
  **supported** when the interval excludes 0 in the paper's direction; **contradicted** when it
  excludes 0 the other way; otherwise **consistent, unresolved** when the mean agrees with the
  paper, and **against, unresolved** when it does not (the interval spans 0 either way).
- *Bounded* claims ("no gain", "reaches the level of") use the margin ``MARGIN`` = 0.02 mAP (the
  issue's own "same accuracy" tolerance) in place of 0: "no gain" is supported when the interval's
  upper end is below +0.02 (every gain of 0.02 or more is excluded), contradicted when its lower
  end is above +0.02 (a gain of more than 0.02 is shown); "no loss" mirrors this. The report also
  states the largest gain the interval does not exclude (its upper end).
- A claim checked in several parts (per model, or per training size) is **contradicted** if any
  part is, **supported** only if every part is, **against, unresolved** if any part's mean
  disagrees, else **consistent, unresolved**.
- **not measured**: the study lacks the models, sizes or seeds (two are needed for an interval).

**Resolution.** For the statistic that decides each unresolved part: the minimum detectable
difference with the seeds run (two-sided 5% test, 80% power: ``(t_{0.975,k-1} + t_{0.8,k-1}) sd /
sqrt(k)``) and the number of seeds at which the observed mean would be that detectable difference
(same sd assumed) -- a planning figure, not a promise.

**The claims** (models: seg-supervised = Retina U-Net, U-FRCNN+; without = Retina Net, Mask R-CNN,
Faster R-CNN+; DetU-Net is in neither; two-stage = Mask R-CNN, Faster R-CNN+, U-FRCNN+):

1. ``seg_best`` (donuts_shape, donuts_pattern): the best seg-supervised model beats the best
   model without; per seed: the mean over training sizes of (best seg - best non-seg), the "best"
   of each group picked by its mean over seeds at that size. Directional, > 0.
2. ``lead_grows`` (donuts tasks): per seed, that lead at the smallest size minus at the largest.
   Directional, > 0.
3. ``collapse`` (donuts tasks): each model without seg supervision "essentially collapses" at the
   smallest size; rule: its mAP there is below half its mAP at the largest size. Per model, per
   seed: mAP(smallest) - mAP(largest) / 2. Directional, < 0; one part per model.
4. ``no_gain_scale`` (circles_scale): segmentation supervision brings no gain; Retina U-Net -
   Retina Net and U-FRCNN+ - Faster R-CNN+ at every size. Bounded, no gain; one part per (pair, size).
5. ``two_stage_best`` (circles_scale): the best two-stage model beats the best one-stage model;
   like ``seg_best``. Directional, > 0.
6. ``mask_loss`` (every task): Mask R-CNN's mask loss brings no gain over Faster R-CNN+ with
   little data: Mask R-CNN - Faster R-CNN+ at the *smallest* size. Bounded, no gain.
7. ``unet_two_stage_level`` (every task): Retina U-Net reaches the two-stage detectors' level;
   per seed, the mean over sizes of Retina U-Net - the best two-stage model. Bounded, no loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from scipy import stats

from retina_unet.study.report.tables import fmt_ci, t_interval

SEG_MODELS = ("retina_unet", "ufrcnn_plus")  # full segmentation supervision (paper)
NON_SEG_MODELS = ("retina_net", "mask_rcnn", "faster_rcnn_plus")  # DetU-Net is in neither group
TWO_STAGE = ("mask_rcnn", "faster_rcnn_plus", "ufrcnn_plus")
ONE_STAGE = ("retina_net", "retina_unet", "detunet")
DONUT_TASKS = ("donuts_shape", "donuts_pattern")
TASKS = ("donuts_shape", "donuts_pattern", "circles_scale")

SUPPORTED = "supported"
CONSISTENT = "consistent, unresolved"
AGAINST = "against, unresolved"
CONTRADICTED = "contradicted"
NOT_MEASURED = "not measured"
VERDICTS = (SUPPORTED, CONSISTENT, AGAINST, CONTRADICTED, NOT_MEASURED)
RESOLVED = (SUPPORTED, CONTRADICTED)

MARGIN = 0.02  # mAP: a difference below this is "no gain" / "the same level" (bounded claims)
ALPHA, POWER = 0.05, 0.80  # for the minimum detectable difference
MAX_SEEDS_PLANNED = 200  # seeds_needed beyond this is reported as "> 200"

Cell = tuple[str, int, str, int]  # (task, dim, model, n_train): the unit --until-resolved adds seeds to


@dataclass(frozen=True)
class Estimate:
    """Mean and 95% t-interval of per-seed values; ``sd`` their standard deviation."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Estimate:
        vals = [float(v) for v in values if v is not None and not math.isnan(v)]
        mean, lo, hi, n = t_interval(vals)
        sd = float(pd.Series(vals).std(ddof=1)) if n >= 2 else math.nan
        return cls(mean, lo, hi, n, sd)

    def text(self) -> str:
        return fmt_ci(self.mean, self.lo, self.hi) + f" ({self.n} seeds)"


def directional_verdict(est: Estimate, sign: int) -> str:
    """Claim ``sign * d > 0``: see the module docstring."""
    if est.n < 2 or math.isnan(est.lo):
        return NOT_MEASURED
    lo, hi = (est.lo, est.hi) if sign > 0 else (-est.hi, -est.lo)  # the interval of sign * d
    mean = sign * est.mean
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    return CONSISTENT if mean > 0 else AGAINST


def bounded_verdict(est: Estimate, side: int, margin: float = MARGIN) -> str:
    """Claim ``side * d < margin`` (side +1: "no gain"; side -1: "no loss"): see the module docstring."""
    if est.n < 2 or math.isnan(est.lo):
        return NOT_MEASURED
    lo, hi = (est.lo, est.hi) if side > 0 else (-est.hi, -est.lo)
    mean = side * est.mean
    if hi < margin:
        return SUPPORTED
    if lo > margin:
        return CONTRADICTED
    return CONSISTENT if mean < margin else AGAINST


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from the parts of a claim (any contradicted > all supported > any against > consistent)."""
    if not verdicts or any(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return AGAINST if AGAINST in verdicts else CONSISTENT


def min_detectable(sd: float, k: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a paired t-test over ``k`` seeds detects with ``power``."""
    if k < 2 or math.isnan(sd):
        return math.nan
    return float((stats.t.ppf(1 - alpha / 2, k - 1) + stats.t.ppf(power, k - 1)) * sd / math.sqrt(k))


def seeds_needed(sd: float, gap: float) -> int | None:
    """Seeds at which ``|gap|`` (the mean's distance from the claim's threshold) becomes the minimum
    detectable difference, same sd assumed; None when more than MAX_SEEDS_PLANNED (or gap 0)."""
    if math.isnan(sd) or math.isnan(gap):
        return None
    for k in range(2, MAX_SEEDS_PLANNED + 1):
        if min_detectable(sd, k) <= abs(gap):
            return k
    return None


@dataclass(frozen=True)
class Part:
    """One checked piece of a claim: what was compared, its per-seed estimate and its verdict."""

    label: str
    est: Estimate
    verdict: str
    threshold: float  # 0 for directional claims, +-MARGIN for bounded ones

    def resolution(self) -> str:
        if self.est.n < 2:
            return ""
        mdd = min_detectable(self.est.sd, self.est.n)
        if self.verdict in RESOLVED:
            return f"resolved; MDD {mdd:.3f} with {self.est.n} seeds"
        need = seeds_needed(self.est.sd, self.est.mean - self.threshold)
        need_txt = f"{need}" if need is not None else f"> {MAX_SEEDS_PLANNED}"
        return f"MDD {mdd:.3f} with {self.est.n} seeds; observed gap {abs(self.est.mean - self.threshold):.3f} needs ~{need_txt}"


@dataclass
class Finding:
    key: str  # claim id (see the module docstring)
    where: str  # e.g. "donuts_shape 2D"
    paper: str  # what the paper states
    rule: str  # how we check it
    ours: str  # our numbers
    verdict: str
    parts: list[Part] = field(default_factory=list)
    cells: frozenset[Cell] = frozenset()  # the (task, dim, model, n_train) whose seeds decide it

    @property
    def resolved(self) -> bool:
        return self.verdict in RESOLVED

    def resolution(self) -> str:
        """MDD and seeds needed for the parts that are still unresolved (or all, when all resolved)."""
        open_parts = [p for p in self.parts if p.verdict not in RESOLVED] or self.parts
        return "; ".join(f"{p.label}: {p.resolution()}" for p in open_parts if p.resolution())


# -- per-seed statistics -----------------------------------------------------------------------


def _by_seed(tdf: pd.DataFrame, model: str, n: int) -> pd.Series:
    g = tdf[(tdf.model == model) & (tdf.n_train == n)]
    return g.groupby("seed")["map"].first()


def _best(tdf: pd.DataFrame, models: Sequence[str], n: int) -> str | None:
    """The model of ``models`` with the highest mean mAP over seeds at size ``n`` (ties: first in order)."""
    means = [(m, _by_seed(tdf, m, n).mean()) for m in models]
    means = [(m, v) for m, v in means if not math.isnan(v)]
    if not means:
        return None
    return max(means, key=lambda mv: mv[1])[0]  # max keeps the first of equal values


def _group_lead(tdf: pd.DataFrame, group: Sequence[str], others: Sequence[str]) -> dict[int, tuple[str, str, pd.Series]]:
    """Per size where both groups ran: (best of group, best of others, per-seed difference)."""
    out = {}
    for n in sorted(tdf.n_train.unique(), reverse=True):
        a, b = _best(tdf, group, n), _best(tdf, others, n)
        if a is None or b is None:
            continue
        d = (_by_seed(tdf, a, n) - _by_seed(tdf, b, n)).dropna()
        if len(d):
            out[int(n)] = (a, b, d)
    return out


def _cells(tdf: pd.DataFrame, models: Iterable[str], sizes: Iterable[int]) -> frozenset[Cell]:
    ms, ns = set(models), {int(n) for n in sizes}
    sub = tdf[tdf.model.isin(ms) & tdf.n_train.isin(ns)]
    return frozenset((str(t), int(d), str(m), int(n)) for t, d, m, n in
                     sub[["task", "dim", "model", "n_train"]].drop_duplicates().itertuples(index=False))


def _mean_over_sizes(leads: dict[int, tuple[str, str, pd.Series]]) -> pd.Series:
    """Per seed, the mean over sizes of the lead; only seeds present at every size (paired throughout)."""
    frame = pd.concat({n: d for n, (_, _, d) in leads.items()}, axis=1).dropna()
    return frame.mean(axis=1)


def _not_measured(key, where, paper, rule, why) -> Finding:
    return Finding(key, where, paper, rule, why, NOT_MEASURED)


def _finish(key, where, paper, rule, parts: list[Part], ours: str, cells: frozenset[Cell]) -> Finding:
    return Finding(key, where, paper, rule, ours, combine([p.verdict for p in parts]), parts, cells)


# -- the claims --------------------------------------------------------------------------------


def _group_best(key: str, where: str, tdf: pd.DataFrame, group, others, paper: str, name: str) -> Finding:
    rule = (f"per seed, mean over sizes of (best {name[0]} - best {name[1]}) (best = highest mean at that size); "
            "95% CI > 0")
    leads = _group_lead(tdf, group, others)
    if not leads:
        return _not_measured(key, where, paper, rule, f"needs a {name[0]} and a {name[1]} model")
    est = Estimate.of(_mean_over_sizes(leads))
    detail = "; ".join(f"n={n}: {a} - {b} {Estimate.of(d).text()}" for n, (a, b, d) in leads.items())
    part = Part("mean over sizes", est, directional_verdict(est, +1), 0.0)
    return _finish(key, where, paper, rule, [part], f"mean over sizes {est.text()}. {detail}",
                   _cells(tdf, (*group, *others), leads))


def _lead_grows(where: str, tdf: pd.DataFrame) -> Finding:
    paper = "the lead of the seg-supervised models grows as the training set shrinks"
    rule = "per seed, (best seg - best non-seg) at the smallest size minus at the largest; 95% CI > 0"
    leads = _group_lead(tdf, SEG_MODELS, NON_SEG_MODELS)
    if len(leads) < 2:
        return _not_measured("lead_grows", where, paper, rule, "needs both groups at >= 2 training sizes")
    big, small = max(leads), min(leads)
    growth = (leads[small][2] - leads[big][2]).dropna()
    est = Estimate.of(growth)
    ours = (f"lead at n={small} minus at n={big}: {est.text()} (lead n={small}: {Estimate.of(leads[small][2]).text()}; "
            f"n={big}: {Estimate.of(leads[big][2]).text()})")
    part = Part(f"n={small} vs n={big}", est, directional_verdict(est, +1), 0.0)
    return _finish("lead_grows", where, paper, rule, [part], ours, _cells(tdf, (*SEG_MODELS, *NON_SEG_MODELS), (small, big)))


def _collapse(where: str, tdf: pd.DataFrame) -> Finding:
    paper = "models without segmentation supervision essentially collapse at the smallest size"
    rule = "per non-seg model and seed: mAP(smallest) - mAP(largest)/2; 95% CI < 0 for every such model"
    sizes = sorted(tdf[tdf.model.isin(NON_SEG_MODELS)].n_train.unique())
    models = [m for m in NON_SEG_MODELS if m in set(tdf.model)]
    if len(sizes) < 2 or not models:
        return _not_measured("collapse", where, paper, rule, "needs a non-seg model at >= 2 training sizes")
    small, big = int(sizes[0]), int(sizes[-1])
    parts, texts = [], []
    for m in models:
        x = (_by_seed(tdf, m, small) - 0.5 * _by_seed(tdf, m, big)).dropna()
        est = Estimate.of(x)
        parts.append(Part(m, est, directional_verdict(est, -1), 0.0))
        texts.append(f"{m}: mAP n={small} {_by_seed(tdf, m, small).mean():.3f} vs n={big} "
                     f"{_by_seed(tdf, m, big).mean():.3f}; mAP(small) - mAP(large)/2 {est.text()}")
    return _finish("collapse", where, paper, rule, parts, "; ".join(texts), _cells(tdf, models, (small, big)))


def _no_gain_text(label: str, est: Estimate) -> str:
    if est.n < 2:
        return f"{label}: {est.text()}"
    return f"{label}: {est.text()}, gains above {est.hi:+.3f} excluded"


def _no_gain_scale(where: str, tdf: pd.DataFrame) -> Finding:
    paper = "segmentation supervision brings no gain"
    rule = (f"Retina U-Net - Retina Net and U-FRCNN+ - Faster R-CNN+, per size, paired by seed: upper 95% bound "
            f"< {MARGIN} (supported) / lower bound > {MARGIN} (contradicted)")
    parts, texts, models, sizes = [], [], set(), set()
    for a, b in (("retina_unet", "retina_net"), ("ufrcnn_plus", "faster_rcnn_plus")):
        for n in sorted(tdf.n_train.unique(), reverse=True):
            d = (_by_seed(tdf, a, n) - _by_seed(tdf, b, n)).dropna()
            if not len(d):
                continue
            est = Estimate.of(d)
            label = f"{a} - {b} n={n}"
            parts.append(Part(label, est, bounded_verdict(est, +1), MARGIN))
            texts.append(_no_gain_text(label, est))
            models |= {a, b}
            sizes.add(int(n))
    if not parts:
        return _not_measured("no_gain_scale", where, paper, rule, "needs Retina U-Net and Retina Net (or U-FRCNN+ and Faster R-CNN+)")
    return _finish("no_gain_scale", where, paper, rule, parts, "; ".join(texts), _cells(tdf, models, sizes))


def _mask_loss(where: str, tdf: pd.DataFrame) -> Finding:
    paper = "Mask R-CNN's mask loss brings no gain over Faster R-CNN+ with little data"
    rule = f"Mask R-CNN - Faster R-CNN+ at the smallest size both ran, paired by seed: upper 95% bound < {MARGIN}"
    both = sorted(set(tdf[tdf.model == "mask_rcnn"].n_train) & set(tdf[tdf.model == "faster_rcnn_plus"].n_train))
    if not both:
        return _not_measured("mask_loss", where, paper, rule, "needs Mask R-CNN and Faster R-CNN+")
    n = int(min(both))  # "with little data": the smallest size
    est = Estimate.of((_by_seed(tdf, "mask_rcnn", n) - _by_seed(tdf, "faster_rcnn_plus", n)).dropna())
    label = f"mask_rcnn - faster_rcnn_plus n={n}"
    part = Part(label, est, bounded_verdict(est, +1), MARGIN)
    return _finish("mask_loss", where, paper, rule, [part], _no_gain_text(label, est),
                   _cells(tdf, ("mask_rcnn", "faster_rcnn_plus"), (n,)))


def _unet_two_stage_level(where: str, tdf: pd.DataFrame) -> Finding:
    paper = "Retina U-Net reaches the level of the two-stage detectors"
    rule = (f"per seed, mean over sizes of (Retina U-Net - best two-stage model); lower 95% bound > -{MARGIN} "
            f"(supported) / upper bound < -{MARGIN} (contradicted)")
    leads = _group_lead(tdf, ("retina_unet",), TWO_STAGE)
    if not leads:
        return _not_measured("unet_two_stage_level", where, paper, rule, "needs Retina U-Net and a two-stage model")
    est = Estimate.of(_mean_over_sizes(leads))
    detail = "; ".join(f"n={n}: {a} - {b} {Estimate.of(d).text()}" for n, (a, b, d) in leads.items())
    part = Part("mean over sizes", est, bounded_verdict(est, -1), -MARGIN)
    ours = f"mean over sizes {est.text()}, losses beyond {est.lo:+.3f} excluded. {detail}"
    return _finish("unet_two_stage_level", where, paper, rule, [part], ours, _cells(tdf, ("retina_unet", *TWO_STAGE), leads))


def check_findings(df: pd.DataFrame) -> list[Finding]:
    """Every claim for every (task, dim) it applies to, "not measured" ones included.

    ``df``: one row per run with columns task, dim, model, n_train, seed, map.
    """
    out: list[Finding] = []
    dims = sorted(int(d) for d in df["dim"].unique()) if not df.empty else [2]
    for dim in dims:
        for task in TASKS:
            where = f"{task} {dim}D"
            tdf = df[(df["dim"] == dim) & (df["task"] == task)]
            if task in DONUT_TASKS:
                out.append(_group_best("seg_best", where, tdf, SEG_MODELS, NON_SEG_MODELS,
                                       "models with full segmentation supervision (Retina U-Net, U-FRCNN+) are best",
                                       ("seg-supervised", "non-seg")))
                out.append(_lead_grows(where, tdf))
                out.append(_collapse(where, tdf))
            else:
                out.append(_no_gain_scale(where, tdf))
                out.append(_group_best("two_stage_best", where, tdf, TWO_STAGE, ONE_STAGE,
                                       "two-stage detectors do best", ("two-stage", "one-stage")))
            out.append(_mask_loss(where, tdf))
            out.append(_unet_two_stage_level(where, tdf))
    return out
