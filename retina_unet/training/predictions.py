"""Stored test predictions of a run (``test_predictions.pt``), and the metrics folder of a run.

``train_and_evaluate`` saves the test-time predictions it evaluated (after TTA / ensemble / merge)
with the ground truth and the inference settings. :func:`run_predictions` reuses them when they
answer the question asked (same split, same inference settings and kept epochs, enough images),
and otherwise predicts, so that metrics of a finished run cost seconds instead of an inference pass.

File layout (a ``torch.save`` dict, written atomically)::

    format        PREDICTIONS_FORMAT
    split         "test"
    split_size    images in the split;  n_images  images predicted (the first n)
    members       kept epochs that were ensembled (best first)
    inference     {tta, tta_views, ensemble_top_k, merge, wbc_iou, nms_iou}
    num_classes
    predictions   [n_images] {boxes (P, 2*D) float32, scores (P,), labels (P,) int64}
    targets       [n_images] {boxes (G, 2*D), labels (G,)}
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from retina_unet.training.checkpoint import load_checkpoint, save_checkpoint
from retina_unet.training.config import TrainConfig

PREDICTIONS_FILE = "test_predictions.pt"
PREDICTIONS_FORMAT = "retina_unet.predictions/1"
INFERENCE_KEYS = ("tta", "tta_views", "ensemble_top_k", "merge", "wbc_iou", "nms_iou")


def inference_settings(cfg: TrainConfig) -> dict:
    """The config fields that change test-time predictions of fixed weights."""
    d = cfg.to_dict()
    return {k: d[k] for k in INFERENCE_KEYS}


def save_predictions(
    path: str | Path,
    predictions: Sequence[dict],
    targets: Sequence[dict],
    cfg: TrainConfig,
    num_classes: int,
    split_size: int,
    members: Sequence[int],
    split: str = "test",
) -> Path:
    """Write the predictions of the first ``len(predictions)`` images of ``split`` (see module docstring)."""
    if len(predictions) != len(targets):
        raise ValueError(f"predictions has {len(predictions)} entries but targets has {len(targets)}")
    keep = ("boxes", "scores", "labels")
    save_checkpoint(
        {
            "format": PREDICTIONS_FORMAT,
            "split": split,
            "split_size": int(split_size),
            "n_images": len(predictions),
            "members": [int(e) for e in members],
            "inference": inference_settings(cfg),
            "num_classes": int(num_classes),
            "predictions": [{k: p[k].detach().cpu() for k in keep} for p in predictions],
            "targets": [{k: t[k].detach().cpu() for k in ("boxes", "labels")} for t in targets],
        },
        path,
    )
    return Path(path)


def load_predictions(path: str | Path) -> dict:
    """Read a file written by :func:`save_predictions`; raises ValueError for another format."""
    data = load_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != PREDICTIONS_FORMAT:
        raise ValueError(f"{path} is not a {PREDICTIONS_FORMAT} file")
    return data


def why_not_reusable(stored: dict, cfg: TrainConfig, members: Sequence[int], split: str, n: int | None) -> str | None:
    """None when ``stored`` answers (split, inference settings, kept epochs, n images), else why not."""
    if stored["split"] != split:
        return f"stored predictions are of the {stored['split']} split, not {split}"
    if stored["inference"] != inference_settings(cfg):
        return f"inference settings differ (stored {stored['inference']}, asked {inference_settings(cfg)})"
    if list(stored["members"]) != [int(e) for e in members]:
        return f"kept epochs differ (stored {stored['members']}, run now {list(members)})"
    want = stored["split_size"] if n is None else min(n, stored["split_size"])
    if stored["n_images"] < want:
        return f"only {stored['n_images']} of the {want} images asked for were stored"
    return None


def run_predictions(
    run: str | Path,
    split: str = "test",
    n: int | None = None,
    overrides: dict | None = None,
    data_root: str | Path | None = None,
    reuse: bool = True,
    progress: bool = False,
    save: bool = False,
) -> dict:
    """Test-time predictions of a run directory or one checkpoint file, reused when stored.

    Args:
        run: a run directory (top-k ensemble per its config) or an ``epoch_*.pt`` / ``last.pt`` file.
        split: "train" | "val" | "test". n: only the first n images (None = all).
        overrides: TrainConfig fields to change (inference settings such as ``tta``, ``merge``).
        data_root: the toy-dataset cache (default: run.DEFAULT_DATA_ROOT).
        reuse: use ``run/test_predictions.pt`` when it answers the request.
        save: after predicting the test split of a run directory, store the predictions as
            ``run/test_predictions.pt`` when the run has no such file yet (never replaces one), so
            later metrics of runs trained before predictions were stored are free too.

    Returns:
        ``{"predictions", "targets", "num_classes", "config" (TrainConfig), "source" ("stored" |
        "predicted"), "why_predicted" (str or None), "members", "seconds"}``.
    """
    from retina_unet.training.run import DEFAULT_DATA_ROOT, build_from_config, ensure_dataset, predict_models

    t0 = time.perf_counter()
    path, overrides = Path(run), dict(overrides or {})
    if not path.exists():
        raise FileNotFoundError(f"run: no run directory or checkpoint at {path}")
    why = "a single checkpoint file, not a run directory"
    if path.is_dir():
        last = load_checkpoint(path / "last.pt")
        cfg = TrainConfig.from_dict(last["config"]).replace(**overrides)
        entries = last["top_k"] if cfg.ensemble_top_k else last["top_k"][:1]
        members = [int(e["epoch"]) for e in entries]
        stored_path = path / PREDICTIONS_FILE
        why = f"no {PREDICTIONS_FILE} in the run directory" if reuse else "reuse switched off"
        if reuse and stored_path.is_file():
            stored = load_predictions(stored_path)
            why = why_not_reusable(stored, cfg, members, split, n)
            if why is None:
                k = stored["n_images"] if n is None else min(n, stored["n_images"])
                return {"predictions": stored["predictions"][:k], "targets": stored["targets"][:k],
                        "num_classes": stored["num_classes"], "config": cfg, "source": "stored",
                        "why_predicted": None, "members": members, "seconds": time.perf_counter() - t0}
        from retina_unet.training.run import load_models

        _, models, _ = load_models(path, ensemble=cfg.ensemble_top_k)
    else:
        ck = load_checkpoint(path)
        cfg = TrainConfig.from_dict(ck["config"]).replace(**overrides)
        model = build_from_config(cfg, num_classes=ck.get("num_classes", 2))
        model.load_state_dict(ck["model"])
        models, members = [model.eval()], [int(ck.get("epoch", -1))]
    from retina_unet.training.engine import resolve_device

    device = resolve_device(cfg.device)
    models = [m.to(device) for m in models]
    data = ensure_dataset(cfg, data_root or DEFAULT_DATA_ROOT, splits=(split,)).split(split)
    preds, targets, _ = predict_models(cfg, models, data, device, progress, n)
    if save and path.is_dir() and split == "test" and not (path / PREDICTIONS_FILE).exists():
        save_predictions(path / PREDICTIONS_FILE, preds, targets, cfg, models[0].num_classes, len(data.images),
                         members, split)
    return {"predictions": preds, "targets": targets, "num_classes": models[0].num_classes, "config": cfg,
            "source": "predicted", "why_predicted": why, "members": members, "seconds": time.perf_counter() - t0}


def write_run_metrics(
    run: str | Path,
    out: str | Path,
    split: str = "test",
    n: int | None = None,
    overrides: dict | None = None,
    grid: str | Sequence[float] = "paper",
    data_root: str | Path | None = None,
    reuse: bool = True,
    label: str | None = None,
    progress: bool = False,
    save: bool = False,
) -> dict:
    """Predict (or reuse stored predictions) and write the metrics folder ``out`` of a run.

    Writes ``metrics.json``, ``per_case.csv``, ``detections.csv``, ``pr.png``, ``froc.png``
    (:func:`retina_unet.evaluation.export.write_metrics`); returns the metrics dict. IoU and score
    thresholds are the run config's (``iou_threshold``, ``score_threshold``).
    """
    from retina_unet.evaluation.export import write_metrics

    got = run_predictions(run, split, n, overrides, data_root, reuse, progress, save)
    cfg: TrainConfig = got["config"]
    meta = {
        "run": str(run),
        "split": split,
        "predictions": got["source"],
        "why_predicted": got["why_predicted"],
        "prediction_s": round(got["seconds"], 3),
        "members": got["members"],
        "inference": inference_settings(cfg),
        "model": cfg.model,
        "task": cfg.task,
        "spatial_dims": cfg.spatial_dims,
        "n_train": cfg.n_train,
        "seed": cfg.seed,
    }
    name = label or (Path(run).name if Path(run).is_dir() else Path(run).parent.name)
    return write_metrics(out, got["predictions"], got["targets"], got["num_classes"], name,
                         cfg.iou_threshold, cfg.score_threshold, grid, meta=meta)


def evaluate_run_command(args, path: Path, overrides: dict) -> int:
    """``evaluate RUN --metrics-out DIR``: write the metrics folder and print the key numbers."""
    from retina_unet.evaluation.export import summary_lines

    m = write_run_metrics(path, args.metrics_out, args.split, args.n, overrides, args.iou_grid,
                          args.data_root, reuse=not args.no_reuse, progress=True, save=args.save_predictions)
    if args.out:
        from retina_unet.training.checkpoint import save_json

        save_json(m, args.out)
    meta = m["meta"]
    how = "stored predictions" if meta["predictions"] == "stored" else f"predicted ({meta['why_predicted']})"
    print(f"{m['n_images']} {args.split} images, {how}, {meta['prediction_s']:.1f} s")
    print("\n".join(summary_lines(m)))
    print(f"wrote {args.metrics_out}/: " + ", ".join(m["files"]))
    return 0
