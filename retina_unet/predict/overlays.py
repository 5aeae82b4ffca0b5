"""``overlays RUN_DIR``: the best and worst cases of a trained run on its toy test set.

Predicts the first ``images`` images of the run's toy ``split`` with the ``evaluate`` test-time
set-up (:func:`retina_unet.inference.predictor_for_config`), scores every case
(:mod:`retina_unet.visualize.ranking`) and writes, into ``out`` (atomically):

- ``best_worst.png``: the ``n`` best cases (top row) and ``n`` worst (bottom row);
- ``cases/<split>_<index>.png``: the overlay of each of those cases;
- ``cases.csv``: every case, best first: rank, index, score, n_gt, n_tp, n_fp, n_missed, max_fp_score;
- ``evaluation.json``: the evaluation of the predicted images (mAP as ``evaluate --n images``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from retina_unet.atomic_io import atomic_dir, check_output_dir, write_json_atomic
from retina_unet.data import DEFAULT_DATA_ROOT, SplitImages, ensure_dataset, image_objects
from retina_unet.environment import resolve_device
from retina_unet.evaluation import evaluate_detections
from retina_unet.inference import predictor_for_config
from retina_unet.predict.pipeline import run_predictor
from retina_unet.rundir import load_run_models
from retina_unet.visualize.overlays import draw_case
from retina_unet.visualize.ranking import case_score, draw_best_worst, rank_cases


def run_overlays(
    checkpoint: str | Path,
    out: str | Path,
    n: int = 4,
    images: int | None = 100,
    split: str = "test",
    data_root: str | Path | None = None,
    tta: bool | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the best / worst overlays of ``checkpoint`` (run directory or ``.pt``) into ``out``.

    Args:
        n: cases per row. images: predict the first this many images of ``split`` (None = all).
        tta / device: as for ``predict`` (None = the run's settings).

    Returns:
        A summary: ``mAP``, ``n_images``, ``best`` / ``worst`` (index, score) and ``out``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--n: expected an integer >= 1, got {n!r}")
    if images is not None and (not isinstance(images, int) or images < 1):
        raise ValueError(f"--images: expected an integer >= 1, got {images!r}")
    check_output_dir(out, overwrite)
    loaded = load_run_models(checkpoint)
    cfg, d = loaded.cfg, loaded.spatial_dims
    dev = resolve_device(device or cfg.device)
    loaded.models = [m.to(dev) for m in loaded.models]
    predictor = predictor_for_config(loaded.cfg, loaded.models, tta)
    sp = ensure_dataset(cfg, data_root or DEFAULT_DATA_ROOT, splits=(split,)).split(split)
    count = len(sp.images) if images is None else min(images, len(sp.images))
    preds = run_predictor(
        predictor, SplitImages(sp, range(count)), cfg.val_batch_size, dev, progress=progress
    )
    targets = []
    for i in range(count):
        b, lab = image_objects(sp, i)
        targets.append({"boxes": b, "labels": lab})
    res = evaluate_detections(preds, targets, loaded.num_classes, cfg.iou_threshold, cfg.score_threshold)
    scores = [
        case_score(i, preds[i], targets[i], loaded.num_classes, cfg.iou_threshold, cfg.score_threshold)
        for i in range(count)
    ]
    best, worst = rank_cases(scores, min(n, max(1, count // 2)))
    chosen = [c.index for c in best + worst]
    segs = None  # a second pass over the shown cases only, for their segmentation
    if getattr(loaded.models[0], "has_segmentation", False):
        segs = run_predictor(predictor, SplitImages(sp, chosen), cfg.val_batch_size, dev, keep_seg=True)
    width = max(4, len(str(count - 1)))
    name = lambda i: f"{split}_{i:0{width}d}"  # noqa: E731  same names as `export-toy`
    cases = {
        i: {
            "image": np.asarray(sp.images[i]),
            "name": name(i),
            "gt": targets[i],
            "pred": preds[i],
            "seg": segs[k].get("seg") if segs else None,
        }
        for k, i in enumerate(chosen)
    }
    with atomic_dir(out, overwrite) as tmp:
        draw_best_worst(
            tmp / "best_worst.png",
            [(c, cases[c.index]) for c in best],
            [(c, cases[c.index]) for c in worst],
            d,
            title=f"{cfg.model} {cfg.task} {d}D, {split} images 0-{count - 1}: mAP {_fmt(res['mAP'])}",
            score_threshold=cfg.score_threshold,
        )
        for c in best + worst:
            case = cases[c.index]
            draw_case(
                case["image"],
                tmp / "cases" / f"{case['name']}.png",
                d,
                gt=case["gt"],
                pred=case["pred"],
                seg=case["seg"],
                title=f"{case['name']}: case score {c.score:.2f}",
                score_threshold=cfg.score_threshold,
            )
        (tmp / "cases.csv").write_text(_cases_csv(scores, name))
        write_json_atomic(tmp / "evaluation.json", res)
    return {
        "mAP": res["mAP"],
        "n_images": count,
        "best": [(name(c.index), round(c.score, 4)) for c in best],
        "worst": [(name(c.index), round(c.score, 4)) for c in worst],
        "out": str(out),
    }


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _cases_csv(scores, name) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "image", "index", "score", "n_gt", "n_tp", "n_fp", "n_missed", "max_fp_score"])
    ranked = sorted(scores, key=lambda c: (-c.score, c.index))
    for r, c in enumerate(ranked, 1):
        w.writerow(
            [
                r,
                name(c.index),
                c.index,
                f"{c.score:.4f}",
                c.n_gt,
                c.n_tp,
                c.n_fp,
                c.n_missed,
                f"{c.max_fp_score:.4f}",
            ]
        )
    return buf.getvalue()
