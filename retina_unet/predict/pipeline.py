"""``predict``: a checkpoint or run directory on a folder of ``.npy`` images; and the best / worst
overlay grid of a run on its toy test set.

Test-time set-up is the one ``evaluate`` uses (:func:`retina_unet.inference.predictor_for_config`
over :func:`retina_unet.rundir.load_run_models`): the run's models (top-k ensemble when
``ensemble_top_k``), its ``tta`` / ``tta_views`` / ``merge`` / ``wbc_iou`` / ``nms_iou`` settings,
batches of ``val_batch_size`` whole images in file order, through the one predict loop
(:func:`retina_unet.inference.predict_images`).
Everything is validated before any model runs, and outputs are written into a temporary folder that
replaces ``--out`` only when complete.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from retina_unet.atomic_io import atomic_dir, check_output_dir, write_json_atomic
from retina_unet.environment import resolve_device
from retina_unet.inference import Predictor, predict_images, predictor_for_config
from retina_unet.predict.conventions import get_convention
from retina_unet.predict.detections import (
    csv_text,
    detection_records,
    evaluate_detection_files,
    json_document,
    json_text,
)
from retina_unet.predict.inputs import read_ground_truth, scan_inputs
from retina_unet.rundir import LoadedModels, load_run_models
from retina_unet.visualize.overlays import draw_case
from retina_unet.visualize.ranking import case_score, draw_best_worst, rank_cases


def run_predictor(predictor: Predictor, images, batch_size: int, device, keep_seg: bool = False,
                  progress: bool = False, on_batch=None) -> list[dict]:
    """``predictor`` over ``images`` through the one predict loop (:func:`predict_images`)."""
    return predict_images(predictor.predict, images, batch_size, device, progress, "predict", keep_seg, on_batch)


class _Files:
    """Lazy ``(C, *S)`` float32 images of validated input files."""

    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[i].load()


def predict_folder(
    checkpoint: str | Path,
    input_dir: str | Path,
    out: str | Path,
    convention: str = "xyxy",
    overlays: bool = False,
    score_threshold: float | None = None,
    tta: bool | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run ``checkpoint`` on every ``.npy`` in ``input_dir``; write the results into ``out``.

    Writes ``detections.csv`` and ``detections.json`` (see :mod:`retina_unet.predict.detections`);
    with ``overlays`` one PNG per image under ``overlays/``; when ``input_dir`` holds a
    ``ground_truth.json``, also ``evaluation.json`` (the evaluation of the written ``detections.csv``
    read back, with the run's IoU and score thresholds) and, with ``overlays``,
    ``overlays/best_worst.png`` (see :mod:`retina_unet.visualize.ranking`).

    Args:
        score_threshold: keep boxes with score > this (None: the run's ``score_threshold``, 0.1).
        tta: mirroring TTA on / off (None: the run's setting). device: None = the run's.

    Returns:
        A summary dict (counts, paths, settings, and the evaluation when there is ground truth).
    """
    t0 = time.perf_counter()
    get_convention(convention)  # a bad name fails before anything is loaded
    if score_threshold is not None and not math.isfinite(score_threshold):
        raise ValueError(f"--score-threshold: expected a finite number, got {score_threshold!r}")
    check_output_dir(out, overwrite)
    loaded = load_run_models(checkpoint)
    cfg = loaded.cfg
    conv = get_convention(convention, loaded.spatial_dims)
    items = scan_inputs(input_dir, loaded.spatial_dims, loaded.in_channels)
    gt = read_ground_truth(input_dir, items, loaded.spatial_dims)
    threshold = cfg.score_threshold if score_threshold is None else float(score_threshold)
    dev = resolve_device(device or cfg.device)
    loaded.models = [m.to(dev) for m in loaded.models]
    predictor = predictor_for_config(loaded.cfg, loaded.models, tta)
    records: list[dict] = []
    summary = {
        "checkpoint": str(loaded.source),
        "checkpoint_files": [str(f) for f in loaded.files],
        "model": cfg.model,
        "spatial_dims": loaded.spatial_dims,
        "num_classes": loaded.num_classes,
        "settings": {
            "tta": predictor.views != [()],
            "n_members": predictor.n_members,
            "merge": cfg.merge,
            "score_threshold": threshold,
            "batch_size": cfg.val_batch_size,
            "device": str(dev),
        },
    }
    with atomic_dir(out, overwrite) as tmp:
        overlay_dir = tmp / "overlays"

        def each_batch(ids, preds):
            for i, p in zip(ids, preds, strict=True):
                recs = detection_records(items[i].stem, p, conv, threshold)
                records.extend(recs)
                if overlays:
                    draw_case(
                        items[i].load(),
                        overlay_dir / f"{items[i].stem}.png",
                        loaded.spatial_dims,
                        gt=None if gt is None else gt[items[i].stem],
                        pred=p,
                        seg=p.get("seg"),
                        title=f"{items[i].stem}: {len(recs)} detections > {threshold:g}",
                        score_threshold=threshold,
                    )

        preds = run_predictor(
            predictor, _Files(items), cfg.val_batch_size, dev, progress=progress, on_batch=each_batch
        )
        images = [
            {"image": it.stem, "file": it.path.name, "shape": list(it.shape), "dtype": it.dtype}
            for it in items
        ]
        (tmp / "detections.csv").write_text(csv_text(records, loaded.spatial_dims, conv))
        (tmp / "detections.json").write_text(json_text(json_document(images, records, summary, conv)))
        if gt is not None:
            res = evaluate_detection_files(
                tmp / "detections.csv", gt, loaded.num_classes, cfg.iou_threshold, cfg.score_threshold
            )
            write_json_atomic(tmp / "evaluation.json", res)
            summary["evaluation"] = {k: res[k] for k in ("mAP", "ap", "patient_mAP", "n_images")}
            if overlays:
                _best_worst(
                    predictor, items, preds, gt, loaded, dev, overlay_dir / "best_worst.png", threshold
                )
    summary.update(
        n_images=len(items), n_detections=len(records), out=str(out), wall_s=time.perf_counter() - t0
    )
    return summary


def _best_worst(
    predictor, items, preds, gt, loaded: LoadedModels, device, path: Path, threshold: float, n: int = 4
):
    cfg = loaded.cfg
    scores = [
        case_score(i, preds[i], gt[it.stem], loaded.num_classes, cfg.iou_threshold, cfg.score_threshold)
        for i, it in enumerate(items)
    ]
    best, worst = rank_cases(scores, min(n, max(1, len(items) // 2)))
    chosen = [c.index for c in best + worst]
    images = _Files([items[i] for i in chosen])
    has_seg = getattr(loaded.models[0], "has_segmentation", False)  # else no second pass is needed
    segs = run_predictor(predictor, images, cfg.val_batch_size, device, keep_seg=True) if has_seg else None
    cases = {
        i: {
            "image": images[k],
            "name": items[i].stem,
            "gt": gt[items[i].stem],
            "pred": preds[i],
            "seg": segs[k].get("seg") if segs else None,
        }
        for k, i in enumerate(chosen)
    }
    draw_best_worst(
        path,
        [(c, cases[c.index]) for c in best],
        [(c, cases[c.index]) for c in worst],
        loaded.spatial_dims,
        title=f"{cfg.model}: best / worst of {len(items)} cases",
        score_threshold=threshold,
    )
