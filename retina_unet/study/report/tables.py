"""From result files to a tidy table, means with 95% confidence intervals, and paired differences.

Intervals are Student-t intervals over seeds: mean +/- t_{0.975, n-1} * sd / sqrt(n). With 3-5 seeds
a bootstrap interval is too narrow (it cannot see beyond the few values it resamples); the t
interval is honest about how little 3 seeds say. Paired differences are taken per seed (same
subset, same initialisation seed for both models), then the same t interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

KEY_COLUMNS = ["task", "dim", "model", "n_train", "seed"]
CONFIDENCE = 0.95


def t_interval(values: Iterable[float], level: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the Student-t interval; low = high = nan when n < 2."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def t_errorbar(values: Sequence[float]) -> tuple[float, float]:
    """seaborn ``errorbar=`` callable: the t interval's (low, high)."""
    _, lo, hi, _ = t_interval(values)
    return lo, hi


def result_rows(envelopes: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: the grid keys, test mAP, per-class AP, patient AP, times and provenance."""
    rows = []
    for env in envelopes:
        spec, res, runner = env["spec"], env["result"], env.get("runner", {})
        row: dict[str, Any] = {
            "task": spec["task"], "dim": int(spec["dim"]), "model": spec["model"], "n_train": int(spec["n_train"]),
            "seed": int(spec["seed"]), "map": float(res["mAP"]),
        }
        for cls, ap in sorted((res.get("ap") or {}).items()):
            row[f"ap_class{cls}"] = _num(ap)
        row["patient_map"] = _num(res.get("patient_mAP"))
        for cls, ap in sorted((res.get("patient_ap") or {}).items()):
            row[f"patient_ap_class{cls}"] = _num(ap)
        row["wall_time_s"] = _num(runner.get("wall_time_s", res.get("wall_s")))
        row["train_s"] = _num(res.get("train_s"))
        row["commit"] = res.get("git_commit") or env.get("commit")
        row["resumed"] = bool(res.get("resumed", False))
        row["run_id"] = env["run_id"]
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "map", "patient_map", "wall_time_s", "commit", "run_id"])
    return df.sort_values(KEY_COLUMNS, ascending=[True, True, True, False, True]).reset_index(drop=True)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def summarise(df: pd.DataFrame, value: str = "map") -> pd.DataFrame:
    """Mean and t interval of ``value`` over seeds per (task, dim, model, n_train)."""
    out = []
    for (task, dim, model, n), g in df.groupby(["task", "dim", "model", "n_train"], sort=True):
        mean, lo, hi, k = t_interval(g[value])
        out.append({"task": task, "dim": dim, "model": model, "n_train": n, "mean": mean, "ci_low": lo,
                    "ci_high": hi, "n_seeds": k})
    return pd.DataFrame(out, columns=["task", "dim", "model", "n_train", "mean", "ci_low", "ci_high", "n_seeds"])


def paired_differences(df: pd.DataFrame, a: str = "retina_unet", b: str = "retina_net",
                       value: str = "map") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed differences ``a - b`` (only seeds where both ran) and their summary per training size.

    Returns (per-seed rows: task, dim, n_train, seed, diff; summary rows: task, dim, n_train, mean,
    ci_low, ci_high, n_pairs).
    """
    per_seed, summary = [], []
    sub = df[df["model"].isin([a, b])]
    for (task, dim, n), g in sub.groupby(["task", "dim", "n_train"], sort=True):
        wide = g.pivot_table(index="seed", columns="model", values=value, aggfunc="first")
        if a not in wide or b not in wide:
            continue
        d = (wide[a] - wide[b]).dropna()
        per_seed += [{"task": task, "dim": dim, "n_train": n, "seed": int(s), "diff": float(v)} for s, v in d.items()]
        mean, lo, hi, k = t_interval(d)
        summary.append({"task": task, "dim": dim, "n_train": n, "mean": mean, "ci_low": lo, "ci_high": hi,
                        "n_pairs": k})
    return (pd.DataFrame(per_seed, columns=["task", "dim", "n_train", "seed", "diff"]),
            pd.DataFrame(summary, columns=["task", "dim", "n_train", "mean", "ci_low", "ci_high", "n_pairs"]))


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
