"""Localisation apart from classification: a run's stored test predictions scored class-agnostic.

Every prediction and every object is given label 1, then AP at the run's IoU threshold is computed
as usual (``retina_unet.evaluation.evaluate_detections``). A detector that finds every object but
guesses its class scores ~1.0 here and ~0.5 per class in its real mAP (docs/models.md, "3D
learning"). Usage: ``python -m benchmarks.study.class_agnostic_ap RUN [RUN ...]`` (run folders
holding ``test_predictions.pt``).
"""

from __future__ import annotations

import argparse

import torch

from retina_unet.evaluation import evaluate_detections
from retina_unet.rundir import RunDir


def class_agnostic_map(run: str, iou_threshold: float = 0.1) -> tuple[float, float, int]:
    """(class-agnostic AP, the run's mAP on the same images, number of images) of a run folder."""
    stored = RunDir(run).stored_predictions()
    if stored is None:
        raise FileNotFoundError(f"run: {run} has no test_predictions.pt (train it to the end first)")
    preds, targets = stored["predictions"], stored["targets"]

    def one_class(items: list[dict]) -> list[dict]:
        return [{**x, "labels": torch.ones_like(x["labels"])} for x in items]

    agnostic = evaluate_detections(one_class(preds), one_class(targets), num_classes=1, iou_threshold=iou_threshold)
    per_class = evaluate_detections(preds, targets, num_classes=stored["num_classes"], iou_threshold=iou_threshold)
    return float(agnostic["mAP"]), float(per_class["mAP"]), len(preds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders with stored test predictions")
    args = ap.parse_args()
    print("| run | test images | mAP | class-agnostic AP |")
    print("|---|---|---|---|")
    for run in args.runs:
        agnostic, real, n = class_agnostic_map(run)
        print(f"| {run} | {n} | {real:.3f} | {agnostic:.3f} |")


if __name__ == "__main__":
    main()
