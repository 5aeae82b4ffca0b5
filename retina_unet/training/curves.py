"""Learning curves: training loss and validation mAP per epoch of one or more runs, as a figure.

Sources, in order: the run's ``metrics.csv`` (:mod:`retina_unet.training.tracking`), its
``history.json``, or the ``curve`` field of a ``result.json``. CLI (:mod:`retina_unet.cli`):
``python -m retina_unet curves RUN_DIR [RUN_DIR ...] --out curves.png``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

CURVE_FILES = ("metrics.csv", "history.json", "result.json")
CURVE_PANELS = (("loss", "training loss (mean over the epoch)"), ("val_mAP", "validation mAP (IoU > 0.1)"))


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def load_curve(run: str | Path) -> list[dict]:
    """Per-epoch records ``{"epoch", "loss", "val_mAP", "lr", ...}`` (floats) of a run directory or a
    ``result.json`` / ``history.json`` / ``metrics.csv`` file."""
    path = Path(run)
    if path.is_dir() and not any((path / n).is_file() for n in CURVE_FILES) and (path / "out").is_dir():
        path = path / "out"  # a study run folder (runs/<run_id>) keeps its training run in out/
    if path.is_dir():
        for name in CURVE_FILES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"run: {run} has no metrics.csv, history.json or result.json")
    elif not path.is_file():
        raise FileNotFoundError(f"run: no run directory or curve file at {run}")
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("result"), dict):  # a study result envelope
            data = data["result"]
        rows = data.get("curve", []) if isinstance(data, dict) else data
    return [{k: _num(v) for k, v in r.items() if not isinstance(v, dict)} for r in rows]


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping]], path: str | Path, dpi: int = 80) -> Path:
    """Training loss (log scale) and validation mAP vs epoch, a line per run.

    Args:
        curves: {label: per-epoch records with ``epoch``, ``loss``, ``val_mAP``} (see :func:`load_curve`).
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    from retina_unet.atomic_io import save_figure_atomic

    if not curves:
        raise ValueError("curves must map at least one run label to its per-epoch records")
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4.2 * len(CURVE_PANELS), 3.3), squeeze=False)
    for color, (label, rows) in zip(sns.color_palette("tab10", max(len(curves), 1)), curves.items(), strict=False):
        epochs = np.array([_num(r.get("epoch")) for r in rows])
        for ax, (key, _) in zip(axes[0], CURVE_PANELS, strict=True):
            y = np.array([_num(r.get(key)) for r in rows])
            if np.isfinite(y).any():
                ax.plot(epochs, y, marker="o", ms=3, lw=1.5, color=color, label=label)
    for ax, (key, title) in zip(axes[0], CURVE_PANELS, strict=True):
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "loss" and ax.lines:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        if key == "val_mAP":
            ax.set_ylim(0, 1.02)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = save_figure_atomic(fig, path, dpi)
    plt.close(fig)
    return out


def run_label(run: str) -> str:
    """A legend label for a run directory or curve file: the run's name: its folder, or for a study run
    (``runs/<run_id>/out``, ``results/<run_id>.json``) its run id, never the generic "out"."""
    p = Path(run)
    if p.is_file():
        p = p.parent if p.name in CURVE_FILES else p.with_suffix("")
    return p.parent.name if p.name == "out" else p.name
