"""The only orchestration: train one run end to end, and evaluate a run (one path for ``evaluate``
with or without ``--metrics-out``, reusing stored predictions when they answer the question).

:func:`train_and_evaluate` is what ``train`` and the study runner call once per run; it is safe in a
fresh worker process (no global state besides torch's thread count and RNG, both set here; the
dataset cache is written atomically under a file lock).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from retina_unet.atomic_io import write_json_atomic
from retina_unet.data import (
    DEFAULT_DATA_ROOT,
    SplitImages,
    check_inputs,
    ensure_dataset,
    split_targets,
    subset_indices,
    task_num_classes,
)
from retina_unet.environment import autocast_for, environment, git_commit, resolve_device
from retina_unet.evaluation import evaluate_detections
from retina_unet.inference import predict_images, predictor_for_config
from retina_unet.rundir import (
    PREDICTIONS_FILE,
    CheckpointError,
    LoadedModels,
    RunDir,
    inference_settings,
    load_run_models,
    save_predictions,
    why_not_reusable,
)
from retina_unet.training import TrainConfig, Trainer
from retina_unet.training.model import build_from_config


def predict_loaded(
    loaded: LoadedModels, split, device, progress: bool = False, n: int | None = None
) -> tuple[list[dict], list[dict], int]:
    """Test-time predictions (TTA / ensemble / merge per ``loaded.cfg``) of the first ``n`` images of
    ``split``. Returns ``(predictions, targets, n_members)`` (per image dicts on the CPU)."""
    predictor = predictor_for_config(loaded.cfg, loaded.models)
    n = len(split.images) if n is None else min(n, len(split.images))
    # bfloat16 on a CPU run that trained with it (cfg.cpu_bf16); CUDA test inference stays float32
    with autocast_for(device, False, loaded.cfg.cpu_bf16):
        preds = predict_images(predictor.predict, SplitImages(split, range(n)), loaded.cfg.val_batch_size,
                               device, progress, desc="test")
    return preds, split_targets(split, range(n)), predictor.n_members


def train_and_evaluate(
    cfg: TrainConfig,
    out_dir: str | Path,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    progress: bool = True,
    resume: bool = True,
    re_evaluate: bool = False,
) -> dict:
    """Train ``cfg`` into ``out_dir`` and evaluate on the test split; returns (and writes) the result.

    ``out_dir`` must be new, empty or a run folder (anything else is refused). With ``resume`` a run
    folder is continued from its ``last.pt``; ``resume=False`` starts over (the run's files in
    ``out_dir`` are deleted first). A finished run (trained and tested) is left untouched and its
    stored result returned, with ``"already_finished": True``, unless ``re_evaluate`` (then its test
    evaluation is done again with ``cfg``'s test-time settings and the result rewritten).

    Result (JSON-serialisable; also ``out_dir/result.json``):
        ``mAP``, ``ap`` {class: AP}, ``patient_mAP``, ``patient_ap`` {class: AP} (test split, after
        TTA/ensemble/merge per config; see :mod:`retina_unet.evaluation`), ``test`` (the full
        evaluation dict incl. TP/FP counts, ``inference_s``, ``n_members``), ``curve`` (per epoch:
        mean losses, ``val_mAP``, ``val_ap``, ``train_s``, ``val_s``), ``top_k`` (kept epochs with val
        mAP), ``train_s`` / ``wall_s`` (seconds), ``config`` (TrainConfig as dict), ``seed``,
        ``n_train``, ``git_commit``, ``environment``, ``resumed`` (bool). The test predictions are
        saved as ``out_dir/test_predictions.pt`` (later metrics reuse them).
    """
    t_start = time.perf_counter()
    run = RunDir(out_dir)
    run.check_train_target()
    if not resume and run.is_run():
        run.clear()
    try:
        finished = resume and not re_evaluate and run.is_finished()
    except CheckpointError as exc:  # the same advice as the Trainer's resume
        raise CheckpointError(f"{exc}; cannot resume the run in {run.path}: start over with --no-resume "
                              f"(train_and_evaluate(resume=False)) or delete {run.last_path}") from exc
    if finished:
        done, _ = run.last()
        _check_same_run(cfg, done["config"], run)
        result = run.result()
        result["already_finished"] = True
        return result
    out_dir = run.path
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    dataset = ensure_dataset(cfg, data_root, progress)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    if cfg.n_train > len(train):
        raise ValueError(f"n_train={cfg.n_train} is larger than the train pool ({len(train)} images)")
    indices = subset_indices(len(train), cfg.n_train, cfg.seed)
    model = build_from_config(cfg, num_classes=task_num_classes(cfg), seed=cfg.seed)
    check_inputs(train, indices, model, "train")
    check_inputs(val, range(min(len(val), cfg.val_subset or len(val))), model, "val")
    trainer = Trainer(cfg, model, train, val, indices, model.num_classes, out_dir, progress)
    resumed = trainer.try_resume()
    t_train = time.perf_counter()
    trainer.fit()
    train_s = time.perf_counter() - t_train
    device = resolve_device(cfg.device)
    loaded = run.load_models(ensemble=cfg.ensemble_top_k, device=device)
    loaded.cfg = cfg  # this call's test-time settings (they may differ from last.pt's on resume)
    t0 = time.perf_counter()
    preds, targets, n_members = predict_loaded(loaded, test, device, progress, cfg.test_subset)
    test_res = evaluate_detections(preds, targets, loaded.num_classes, cfg.iou_threshold, cfg.score_threshold)
    test_res["inference_s"] = time.perf_counter() - t0
    test_res["n_members"] = n_members
    save_predictions(out_dir / PREDICTIONS_FILE, preds, targets, cfg, loaded.num_classes, len(test.images),
                     loaded.members)
    entries = run.kept_epochs(cfg.ensemble_top_k)[1]
    result = {
        "mAP": test_res["mAP"],
        "ap": test_res["ap"],
        "patient_mAP": test_res["patient_mAP"],
        "patient_ap": test_res["patient_ap"],
        "test": test_res,
        "curve": trainer.history,
        "top_k": entries,
        "train_s": train_s,
        "wall_s": time.perf_counter() - t_start,
        "config": cfg.to_dict(),
        # the resolved model settings (e.g. seg_classes per model); None for models without a cfg
        "model_config": (
            dataclasses.asdict(model.cfg) if dataclasses.is_dataclass(getattr(model, "cfg", None)) else None
        ),
        "seed": cfg.seed,
        "n_train": cfg.n_train,
        "git_commit": git_commit(),
        "environment": environment(),
        "precision": trainer.meta["precision"],  # what the run trained (and tested, on a CPU) in
        "resumed": resumed,
        "dataset": str(dataset.path),
    }
    result = json.loads(json.dumps(result, default=str))  # string keys, plain types
    write_json_atomic(out_dir / "result.json", result, indent=2)
    return result


def _check_same_run(cfg: TrainConfig, saved: dict, run: RunDir) -> None:
    """A finished run asked for again must be the same run (test-time settings aside)."""
    from retina_unet.training import fields_with_role

    may_change = set(fields_with_role(cfg, "resume_may_change"))
    diff = {k: (saved.get(k), v) for k, v in cfg.to_dict().items() if saved.get(k) != v and k not in may_change}
    if diff:
        raise ValueError(f"{run.last_path} was written with a different config (saved, now): {diff}; "
                         f"use a fresh out_dir or the same config")


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
        data_root: the toy-dataset cache (default: ``retina_unet.data.DEFAULT_DATA_ROOT``).
        reuse: use ``run/test_predictions.pt`` when it answers the request
            (:func:`retina_unet.rundir.why_not_reusable`).
        save: after predicting the test split of a run directory, store the predictions as
            ``run/test_predictions.pt`` when the run has no such file yet (never replaces one).

    Returns:
        ``{"predictions", "targets", "num_classes", "config" (TrainConfig), "source" ("stored" |
        "predicted"), "why_predicted" (str or None), "members", "n_members", "seconds"}``.
    """
    t0 = time.perf_counter()
    path, overrides = Path(run), dict(overrides or {})
    if not path.exists():
        raise FileNotFoundError(f"run: no run directory or checkpoint at {path}")
    why = "a single checkpoint file, not a run directory"
    if path.is_dir():
        rd = RunDir(path)
        cfg, _ = rd.kept_epochs()
        cfg = cfg.replace(**overrides)
        members = [int(e["epoch"]) for e in rd.kept_epochs(cfg.ensemble_top_k)[1]]
        why = f"no {PREDICTIONS_FILE} in the run directory" if reuse else "reuse switched off"
        stored = rd.stored_predictions() if reuse else None
        if stored is not None:
            why = why_not_reusable(stored, cfg, members, split, n)
            if why is None:
                k = stored["n_images"] if n is None else min(n, stored["n_images"])
                return {"predictions": stored["predictions"][:k], "targets": stored["targets"][:k],
                        "num_classes": stored["num_classes"], "config": cfg, "source": "stored",
                        "why_predicted": None, "members": members,
                        "n_members": _n_members(cfg, stored), "seconds": time.perf_counter() - t0}
    loaded = load_run_models(path, overrides=overrides)
    cfg = loaded.cfg
    device = resolve_device(cfg.device)
    loaded.to(device)
    data = ensure_dataset(cfg, data_root or DEFAULT_DATA_ROOT, splits=(split,)).split(split)
    preds, targets, n_members = predict_loaded(loaded, data, device, progress, n)
    if save and path.is_dir() and split == "test" and not (path / PREDICTIONS_FILE).exists():
        save_predictions(path / PREDICTIONS_FILE, preds, targets, cfg, loaded.num_classes, len(data.images),
                         loaded.members, split)
    return {"predictions": preds, "targets": targets, "num_classes": loaded.num_classes, "config": cfg,
            "source": "predicted", "why_predicted": why, "members": loaded.members, "n_members": n_members,
            "seconds": time.perf_counter() - t0}


def _n_members(cfg: TrainConfig, stored: dict) -> int:
    """Predictions merged per image (kept epochs x mirror views, as ``Predictor.n_members``)."""
    from retina_unet.inference import mirror_views

    dims = stored["targets"][0]["boxes"].shape[-1] // 2 if stored["targets"] else 2
    views = len(mirror_views(dims, cfg.tta_views)) if cfg.tta else 1
    return len(stored["members"]) * views


def evaluate_run(
    run: str | Path,
    split: str = "test",
    n: int | None = None,
    overrides: dict | None = None,
    data_root: str | Path | None = None,
    reuse: bool = True,
    progress: bool = False,
    save: bool = False,
    metrics_out: str | Path | None = None,
    grid: str | Sequence[float] = "paper",
    label: str | None = None,
) -> dict:
    """Evaluate a run (or one checkpoint) on ``split``: the one path behind ``evaluate``.

    Predictions come from :func:`run_predictions` (stored ones reused when they answer). Returns the
    evaluation dict (:func:`retina_unet.evaluation.evaluate_detections`: ``mAP``, ``ap``,
    ``patient_mAP``, ...) plus ``n_members`` and ``meta`` (where the predictions came from). With
    ``metrics_out`` every metric is also written there (``metrics.json``, ``per_case.csv``,
    ``detections.csv``, ``pr.png``, ``froc.png``; :func:`retina_unet.evaluation.export.write_metrics`)
    and the returned dict is the metrics dict.
    """
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
    if metrics_out is not None:
        from retina_unet.evaluation.export import write_metrics

        name = label or (Path(run).name if Path(run).is_dir() else Path(run).parent.name)
        res = write_metrics(metrics_out, got["predictions"], got["targets"], got["num_classes"], name,
                            cfg.iou_threshold, cfg.score_threshold, grid, meta=meta)
    else:
        res = evaluate_detections(got["predictions"], got["targets"], got["num_classes"], cfg.iou_threshold,
                                  cfg.score_threshold)
        res["meta"] = meta
    res["n_members"] = got["n_members"]
    return res


def write_run_metrics(run: str | Path, out: str | Path, split: str = "test", n: int | None = None,
                      overrides: dict | None = None, grid: str | Sequence[float] = "paper",
                      data_root: str | Path | None = None, reuse: bool = True, label: str | None = None,
                      progress: bool = False, save: bool = False) -> dict:
    """The metrics folder ``out`` of a run (:func:`evaluate_run` with ``metrics_out=out``)."""
    return evaluate_run(run, split, n, overrides, data_root, reuse, progress, save, metrics_out=out, grid=grid,
                        label=label)
