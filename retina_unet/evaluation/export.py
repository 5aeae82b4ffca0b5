"""Write a run's metrics folder: ``metrics.json``, ``per_case.csv``, ``detections.csv``, ``pr.png``,
``froc.png``. Every file is written atomically (temp name in the same folder, then rename)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from retina_unet.atomic_io import write_csv_atomic, write_json_atomic
from retina_unet.evaluation.froc import FROC_FP_RATES
from retina_unet.evaluation.metrics import detection_metrics
from retina_unet.evaluation.per_case import CASE_COLUMNS, DETECTION_COLUMNS, per_case_rows

METRICS_FILES = ("metrics.json", "per_case.csv", "detections.csv", "pr.png", "froc.png")


def write_metrics(
    out_dir: str | Path,
    predictions: Sequence[dict],
    targets: Sequence[dict],
    num_classes: int,
    label: str = "run",
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
    grid: str | Sequence[float] = "paper",
    fp_rates: Sequence[float] = FROC_FP_RATES,
    meta: dict | None = None,
) -> dict:
    """Compute every metric of ``predictions`` against ``targets`` and write the metrics folder.

    Args:
        out_dir: folder to (create and) write into.
        predictions / targets: one dict per image (see :func:`detection_metrics`).
        num_classes: foreground classes. label: the run's name in figure legends.
        iou_threshold, score_threshold, grid, fp_rates: see :func:`detection_metrics`.
        meta: extra JSON-able provenance stored under ``"meta"`` in metrics.json (run dir, split...).

    Returns:
        The metrics dict (as written to metrics.json, with ``meta`` and ``files``).
    """
    from retina_unet.evaluation.plots import plot_froc, plot_pr

    out = Path(out_dir)
    metrics = detection_metrics(predictions, targets, num_classes, iou_threshold, score_threshold, grid, fp_rates)
    cases, dets = per_case_rows(predictions, targets, num_classes, iou_threshold, score_threshold)
    metrics["meta"] = {"label": label, "definitions": "docs/metrics.md", **(meta or {})}
    metrics["files"] = list(METRICS_FILES)
    write_csv_atomic(out / "per_case.csv", cases, [*CASE_COLUMNS, *(f"score_c{c}" for c in range(1, num_classes + 1))])
    write_csv_atomic(out / "detections.csv", dets, DETECTION_COLUMNS)
    plot_pr({label: metrics}, out / "pr.png")
    plot_froc({label: metrics}, out / "froc.png")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def summary_lines(metrics: dict) -> list[str]:
    """A few human-readable lines with the key numbers of a metrics dict."""
    p, c, f = metrics["paper"], metrics["coco_style"], metrics["froc"]["all"]
    grid = c["grid"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    return [
        f"mAP (IoU > {metrics['iou_threshold']:g}): {fmt(p['mAP'])}  per class "
        + ", ".join(f"{k}: {fmt(v)}" for k, v in p["ap"].items()),
        f"COCO-style mAP (IoU {grid[0]:g}:{grid[-1]:g}, {len(grid)} thresholds): {fmt(c['mAP'])}; "
        f"standard COCO grid 0.5:0.95: {fmt(metrics['coco_standard']['mAP'])}",
        "mAP by IoU: " + ", ".join(f">{t:g}: {fmt(metrics['ap_by_iou'][f'{t:g}']['mAP'])}"
                                   for t in sorted({*grid, 0.75})),
        f"patient-level mAP: {fmt(p['patient_mAP'])}",
        f"CPM (all classes): {fmt(f['cpm'])}; sensitivity at "
        + ", ".join(f"{r:g}: {fmt(s)}" for r, s in zip(f["fp_rates"], f["sensitivity"], strict=True))
        + " FPs/image",
    ]
