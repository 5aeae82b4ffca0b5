"""Precision-recall and FROC figures drawn from :func:`~retina_unet.evaluation.metrics.detection_metrics`
dicts (so several runs can share a figure and a stored ``metrics.json`` can be drawn again)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 80


def _classes(metrics: Mapping[str, dict]) -> list[str]:
    first = next(iter(metrics.values()))
    return [str(c) for c in range(1, int(first["num_classes"]) + 1)]


def _save(fig, path: str | Path) -> Path:
    from retina_unet.atomic_io import save_figure_atomic

    path = save_figure_atomic(fig, path, DPI)
    plt.close(fig)
    return path


def _check(metrics: Mapping[str, dict]) -> None:
    if not metrics:
        raise ValueError("metrics must map at least one run label to a detection_metrics dict")


def plot_pr(metrics: Mapping[str, dict], path: str | Path, second_iou: float | None = 0.75) -> Path:
    """Precision vs recall (the monotone 101-point curve AP averages), a panel per class.

    Args:
        metrics: {run label: detection_metrics dict}; one colour per run.
        path: the PNG to write (atomically).
        second_iou: also draw this IoU threshold (dashed) when the dicts have it; None for only the
            primary threshold (solid).
    """
    _check(metrics)
    sns.set_theme(style="whitegrid", context="notebook")
    classes = _classes(metrics)
    fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 3.4), squeeze=False, sharey=True)
    for color, (label, m) in zip(sns.color_palette("tab10"), metrics.items(), strict=False):
        recall = np.asarray(m["curves"]["pr"]["recall"])
        prim = f"{m['iou_threshold']:g}"
        styles = [(prim, "-")]
        if second_iou is not None and f"{second_iou:g}" in m["curves"]["pr"]["precision"] and f"{second_iou:g}" != prim:
            styles.append((f"{second_iou:g}", "--"))
        for ax, cls in zip(axes[0], classes, strict=True):
            for key, ls in styles:
                prec = np.array(m["curves"]["pr"]["precision"][key][cls], dtype=float)
                ap = m["ap_by_iou"][key][cls]
                ax.plot(recall, prec, ls=ls, color=color, lw=1.6,
                        label=f"{label}, IoU>{key}: AP {'n/a' if ap is None else f'{ap:.3f}'}")
    for ax, cls in zip(axes[0], classes, strict=True):
        ax.set(xlim=(0, 1.01), ylim=(0, 1.02), xlabel="recall", title=f"class {cls}")
        ax.legend(fontsize=7, loc="lower left")
    axes[0, 0].set_ylabel("precision (monotone)")
    first = next(iter(metrics.values()))
    fig.suptitle(f"precision-recall, score > {first['score_threshold']:g}, {first['n_images']} images", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_froc(metrics: Mapping[str, dict], path: str | Path) -> Path:
    """Sensitivity vs average false positives per image (log x), a panel per class and one for all.

    The markers are the FROC rates whose mean is the CPM (given in the legend).
    """
    _check(metrics)
    sns.set_theme(style="whitegrid", context="notebook")
    panels = [*_classes(metrics), "all"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), squeeze=False, sharey=True)
    for color, (label, m) in zip(sns.color_palette("tab10"), metrics.items(), strict=False):
        x = np.asarray(m["curves"]["froc"]["fp_per_image"])
        for ax, key in zip(axes[0], panels, strict=True):
            y = np.array(m["curves"]["froc"]["sensitivity"][key], dtype=float)
            f = m["froc"][key]
            cpm = f["cpm"]
            ax.step(x, y, where="post", color=color, lw=1.6,
                    label=f"{label}: CPM {'n/a' if cpm is None else f'{cpm:.3f}'}")
            ax.plot(f["fp_rates"], np.array(f["sensitivity"], dtype=float), "o", color=color, ms=4)
    rates = next(iter(metrics.values()))["froc"]["all"]["fp_rates"]
    for ax, key in zip(axes[0], panels, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(rates, [f"1/{round(1 / r)}" if r < 1 else f"{r:g}" for r in rates], fontsize=8)
        ax.minorticks_off()
        ax.set(ylim=(0, 1.02), xlabel="false positives per image", title="all classes" if key == "all" else f"class {key}")
        ax.legend(fontsize=7, loc="lower right")
    axes[0, 0].set_ylabel("sensitivity")
    first = next(iter(metrics.values()))
    fig.suptitle(f"FROC at IoU > {first['iou_threshold']:g}, score > {first['score_threshold']:g}, "
                 f"{first['n_images']} images", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
