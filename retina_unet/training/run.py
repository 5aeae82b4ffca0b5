"""One run end to end: data (cached), model, training, test-time inference, evaluation, result.json.

:func:`train_and_evaluate` is what the study runner calls once per run; it is safe in a fresh
worker process (no global state besides torch's thread count and RNG, both set here; the dataset
cache is written atomically under a file lock).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from retina_unet.evaluation import evaluate_detections
from retina_unet.inference import Predictor
from retina_unet.training.checkpoint import load_checkpoint, save_json
from retina_unet.training.config import TrainConfig
from retina_unet.training.data import check_inputs, subset_indices
from retina_unet.training.engine import Trainer, predict_split, resolve_device
from retina_unet.training.environment import environment, git_commit
from retina_unet.training.predictions import PREDICTIONS_FILE

DEFAULT_DATA_ROOT = os.environ.get("RETINA_UNET_DATA", "data/cache")


def dataset_key(cfg: TrainConfig) -> str:
    """Cache folder name: task, dim, data seed, pool sizes and a hash of the task overrides."""
    over = json.dumps(cfg.task_overrides, sort_keys=True, default=str)
    h = hashlib.sha256(over.encode()).hexdigest()[:8] if cfg.task_overrides else "default"
    return (
        f"{cfg.task}_{cfg.spatial_dims}d_seed{cfg.data_seed}_"
        f"n{cfg.pool_train}-{cfg.pool_val}-{cfg.pool_test}_{h}"
    )


def ensure_dataset(cfg: TrainConfig, data_root: str | Path = DEFAULT_DATA_ROOT, progress: bool = False):
    """Load the toy dataset of ``cfg`` from the cache, generating it first when missing."""
    import toy_data

    root = Path(data_root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / dataset_key(cfg)
    with open(root / ".lock", "w") as lock:  # one generating process at a time; others wait then load
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (path / "manifest.json").is_file():
                spec = toy_data.task_spec(cfg.task, dim=cfg.spatial_dims, **cfg.task_overrides)
                toy_data.write_dataset(
                    spec,
                    path,
                    seed=cfg.data_seed,
                    n_train=cfg.pool_train,
                    n_val=cfg.pool_val,
                    n_test=cfg.pool_test,
                    progress=progress,
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return toy_data.load_dataset(path, verify=False)


def build_from_config(cfg: TrainConfig, num_classes: int = 2, seed: int | None = None) -> torch.nn.Module:
    """Build the model of ``cfg``; with ``seed`` the global RNG is seeded first (initialisation)."""
    from retina_unet.models import build_model, model_config

    if seed is not None:
        torch.manual_seed(seed)
    mcfg = model_config(
        cfg.spatial_dims,
        cfg.model_size,
        **{"num_classes": num_classes, "in_channels": 1, **cfg.model_overrides},
    )
    return build_model(cfg.model, mcfg)


def load_models(run_dir: str | Path, ensemble: bool = True, device: str | torch.device = "cpu"):
    """The kept top-k epoch models of a run (best first; only the best one with ``ensemble=False``)."""
    run_dir = Path(run_dir)
    last = load_checkpoint(run_dir / "last.pt")
    cfg = TrainConfig.from_dict(last["config"])
    entries = last["top_k"] if ensemble else last["top_k"][:1]
    models = []
    for e in entries:
        ck = load_checkpoint(run_dir / e["path"])
        model = build_from_config(cfg, num_classes=ck.get("num_classes", 2))
        model.load_state_dict(ck["model"])
        models.append(model.to(device).eval())
    return cfg, models, entries


def make_predictor(cfg: TrainConfig, models) -> Predictor:
    """The test-time :class:`Predictor` of a run: ``cfg``'s TTA, merge (WBC / NMS) and their settings
    over ``models`` (the kept epochs, or one)."""
    return Predictor(
        models,
        tta=cfg.tta,
        merge=cfg.merge,
        max_views=cfg.tta_views,
        wbc_iou=cfg.wbc_iou,
        nms_iou=cfg.nms_iou,
    )


def predict_models(
    cfg: TrainConfig, models, split, device, progress: bool = False, n: int | None = None
) -> tuple[list[dict], list[dict], int]:
    """Test-time predictions (TTA / ensemble / merge per ``cfg``) of the first ``n`` images of ``split``.

    Returns ``(predictions, targets, n_members)`` (per image dicts on the CPU; see ``predict_split``).
    """
    predictor = make_predictor(cfg, models)
    n = len(split.images) if n is None else min(n, len(split.images))
    preds, targets = predict_split(
        predictor.predict, split, range(n), cfg.val_batch_size, device, progress, "test"
    )
    return preds, targets, predictor.n_members


def evaluate_models(
    cfg: TrainConfig,
    models,
    split,
    device,
    progress: bool = False,
    n: int | None = None,
    predictions_out: str | Path | None = None,
    members: list[int] | None = None,
) -> dict:
    """Test-time inference and evaluation on ``split``; with ``predictions_out`` the predictions are
    also saved there (``retina_unet.training.predictions``; ``members`` = the ensembled epochs)."""
    t0 = time.perf_counter()
    preds, targets, n_members = predict_models(cfg, models, split, device, progress, n)
    res = evaluate_detections(preds, targets, models[0].num_classes, cfg.iou_threshold, cfg.score_threshold)
    res["inference_s"] = time.perf_counter() - t0
    res["n_members"] = n_members
    if predictions_out is not None:
        from retina_unet.training.predictions import save_predictions

        save_predictions(predictions_out, preds, targets, cfg, models[0].num_classes, len(split.images),
                         members or [])
    return res


def train_and_evaluate(
    cfg: TrainConfig,
    out_dir: str | Path,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    progress: bool = True,
    resume: bool = True,
) -> dict:
    """Train ``cfg`` into ``out_dir`` and evaluate on the test split; returns (and writes) the result.

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
    out_dir = Path(out_dir)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    dataset = ensure_dataset(cfg, data_root, progress)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    if cfg.n_train > len(train):
        raise ValueError(f"n_train={cfg.n_train} is larger than the train pool ({len(train)} images)")
    indices = subset_indices(len(train), cfg.n_train, cfg.seed)
    model = build_from_config(cfg, seed=cfg.seed)
    check_inputs(train, indices, model, "train")
    check_inputs(val, range(min(len(val), cfg.val_subset or len(val))), model, "val")
    trainer = Trainer(cfg, model, train, val, indices, model.num_classes, out_dir, progress)
    resumed = trainer.try_resume()
    t_train = time.perf_counter()
    trainer.fit()
    train_s = time.perf_counter() - t_train
    device = resolve_device(cfg.device)
    _, models, entries = load_models(out_dir, ensemble=cfg.ensemble_top_k, device=device)
    test_res = evaluate_models(cfg, models, test, device, progress, cfg.test_subset,
                               predictions_out=out_dir / PREDICTIONS_FILE, members=[e["epoch"] for e in entries])
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
        "resumed": resumed,
        "dataset": str(dataset.path),
    }
    result = json.loads(json.dumps(result, default=str))  # string keys, plain types
    save_json(result, out_dir / "result.json")
    return result
