"""The run folder: the one loader of what ``train`` writes (checkpoints, models, stored predictions,
the result), for ``evaluate``, ``predict``, ``overlays``, ``export-toy`` and the study report.

Layout (written by :mod:`retina_unet.training` and :mod:`retina_unet.pipeline`)::

    RUN/
      last.pt              resume state: model, optimizer, sampler + RNG states, history, top-k list
      epoch_007.pt         one per kept top-k epoch: model weights + metadata
      history.json, metrics.csv, metrics_steps.csv, tensorboard/   the training curve, tracked
      test_predictions.pt  the evaluated test predictions (below)
      result.json          written when the run has been trained and tested

Every ``.pt`` is read with ``torch.load(weights_only=True)``
(:func:`retina_unet.training.checkpoint.load_checkpoint`) and checked for what our checkpoints
carry (config, model weights, model name, ``num_classes``) before any model is built; each failure
is one :class:`CheckpointError` line naming the file.

Stored predictions (``test_predictions.pt``, a ``torch.save`` dict, written atomically)::

    format        PREDICTIONS_FORMAT
    split         "test"
    split_size    images in the split;  n_images  images predicted (the first n)
    members       kept epochs that were ensembled (best first)
    inference     the run's config fields with the "inference" role (tta, tta_views, ...)
    num_classes
    predictions   [n_images] {boxes (P, 2*D) float32, scores (P,), labels (P,) int64}
    targets       [n_images] {boxes (G, 2*D), labels (G,)}

They are what the run's evaluation saw (after TTA / ensemble / merge), so metrics and report
examples of a finished run read them instead of predicting again (:func:`why_not_reusable`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from retina_unet.data import training_intensity_range
from retina_unet.models import MODEL_NAMES
from retina_unet.training.checkpoint import LAST, CheckpointError, load_checkpoint, save_checkpoint
from retina_unet.training.config import TrainConfig, fields_with_role
from retina_unet.training.model import build_from_config
from retina_unet.training.tracking import METRICS_CSV, STEPS_CSV, TENSORBOARD_DIR

PREDICTIONS_FILE = "test_predictions.pt"
PREDICTIONS_FORMAT = "retina_unet.predictions/1"
RESULT_FILE = "result.json"
HISTORY_FILE = "history.json"
REQUIRED_KEYS = ("config", "model", "num_classes")
# Names a run folder may hold (besides atomic-write temp files, ".<name>.<random>.tmp").
RUN_FILES = frozenset({LAST, HISTORY_FILE, METRICS_CSV, STEPS_CSV, TENSORBOARD_DIR, PREDICTIONS_FILE, RESULT_FILE})
_EPOCH_FILE = re.compile(r"epoch_\d+\.pt")

__all__ = [
    "PREDICTIONS_FILE",
    "CheckpointError",
    "LoadedModels",
    "RunDir",
    "inference_settings",
    "intensity_range_of",
    "load_predictions",
    "load_run_models",
    "read_checkpoint",
    "save_predictions",
    "why_not_reusable",
]


def read_checkpoint(path: str | Path) -> tuple[dict, TrainConfig]:
    """Read and check one checkpoint file; returns (the checkpoint dict, its TrainConfig).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not readable (damaged, truncated, foreign), not a checkpoint of this
            project (a dict with "config", "model" and "num_classes"), an unknown model name or an
            invalid config.
    """
    path = Path(path)
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or any(k not in ck for k in REQUIRED_KEYS):
        what = sorted(ck)[:8] if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(
            f"checkpoint: {path} is not a checkpoint of this project: expected a dict with keys "
            f"{list(REQUIRED_KEYS)}, got {what}"
        )
    if not isinstance(ck["config"], dict):
        raise CheckpointError(f"checkpoint: {path}: 'config' must be a dict, got {type(ck['config']).__name__}")
    name = ck["config"].get("model")
    if name not in MODEL_NAMES:
        raise CheckpointError(
            f"checkpoint: {path} is for an unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}"
        )
    try:
        cfg = TrainConfig.from_dict(ck["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: {path} carries an invalid config: {exc}") from exc
    if not isinstance(ck["model"], dict):
        raise CheckpointError(f"checkpoint: {path}: 'model' must be a state dict, got {type(ck['model']).__name__}")
    if not isinstance(ck["num_classes"], int) or ck["num_classes"] < 1:
        raise CheckpointError(f"checkpoint: {path}: 'num_classes' must be an int >= 1, got {ck['num_classes']!r}")
    return ck, cfg


def intensity_range_of(ck: dict, cfg: TrainConfig) -> tuple[float, float] | None:
    """The training intensity range a checkpoint records, else the one its config's toy task implies
    (checkpoints written before the key existed), else None."""
    rec = ck.get("intensity_range")
    if isinstance(rec, (list, tuple)) and len(rec) == 2 and all(isinstance(v, (int, float)) for v in rec):
        return float(rec[0]), float(rec[1])
    try:
        return training_intensity_range(cfg)
    except (ImportError, ValueError, TypeError):
        return None


def _model_from(path: Path, ck: dict, cfg: TrainConfig, device) -> torch.nn.Module:
    model = build_from_config(cfg, num_classes=ck["num_classes"])
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:  # state dict does not fit the model of the config
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"checkpoint: the weights in {path} do not fit its {cfg.model} config: {first}") from exc
    return model.to(device).eval()


@dataclass
class LoadedModels:
    """Models ready for :class:`retina_unet.inference.Predictor`.

    Attributes:
        cfg: the run's :class:`TrainConfig` (test-time settings: ``tta``, ``merge``, ...).
        models: detectors in eval mode, best epoch first.
        files: the checkpoint files the models came from.
        members: their epochs (best first); ``[-1]`` for a file without an epoch.
        source: the path given (run directory or file).
        intensity_range: (low, high) input intensities of training (checkpoint key
            ``intensity_range``; older checkpoints: derived from the config's toy task; None: unknown),
            the input contract ``predict`` checks.
    """

    cfg: TrainConfig
    models: list[torch.nn.Module]
    files: list[Path]
    members: list[int]
    source: Path
    intensity_range: tuple[float, float] | None = None

    @property
    def spatial_dims(self) -> int:
        return int(self.models[0].spatial_dims)

    @property
    def in_channels(self) -> int:
        return int(self.models[0].cfg.in_channels)

    @property
    def num_classes(self) -> int:
        return int(self.models[0].num_classes)

    def to(self, device) -> LoadedModels:
        self.models = [m.to(device) for m in self.models]
        return self


class RunDir:
    """A run folder (see the module docstring). Nothing is read until asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def last_path(self) -> Path:
        return self.path / LAST

    @property
    def result_path(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def predictions_path(self) -> Path:
        return self.path / PREDICTIONS_FILE

    def is_run(self) -> bool:
        """True when the folder holds a run's resume state (``last.pt``)."""
        return self.last_path.is_file()

    def foreign_entries(self) -> list[str]:
        """Entries of the folder that a run does not write (so it is not a run folder when any)."""
        if not self.path.is_dir():
            return []
        return sorted(
            e.name for e in self.path.iterdir()
            if e.name not in RUN_FILES and not _EPOCH_FILE.fullmatch(e.name)
            and not (e.name.startswith(".") and e.name.endswith(".tmp"))
        )

    def check_train_target(self) -> None:
        """Refuse to train into a path that is a file, or a non-empty folder that is not a run."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out: {self.path} exists and is not a folder")
        foreign = self.foreign_entries()
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise ValueError(
                f"--out: {self.path} is not a run folder (it holds {shown}); give a new or empty folder"
            )

    def clear(self) -> None:
        """Delete what a run wrote (only run files; refuses a folder holding anything else)."""
        self.check_train_target()
        if not self.path.is_dir():
            return
        for e in self.path.iterdir():
            shutil.rmtree(e) if e.is_dir() else e.unlink()

    def last(self) -> tuple[dict, TrainConfig]:
        """``last.pt`` read and checked, with its config."""
        if not self.last_path.is_file():
            raise CheckpointError(
                f"checkpoint: {self.path} is not a run directory (no {LAST}); pass a run directory "
                f"written by `retina-unet train` or one epoch_*.pt file"
            )
        return read_checkpoint(self.last_path)

    def kept_epochs(self, ensemble: bool = True) -> tuple[TrainConfig, list[dict]]:
        """The run's config and its kept top-k entries ``{"epoch", "val_mAP", "path"}`` (best first;
        only the best with ``ensemble=False``)."""
        last, cfg = self.last()
        entries = last.get("top_k") or []
        if not entries:
            raise CheckpointError(f"checkpoint: {self.last_path} lists no kept epochs ('top_k'); "
                                  f"the run has not finished an epoch")
        return cfg, list(entries if ensemble else entries[:1])

    def is_finished(self) -> bool:
        """Trained for all its epochs and tested (``result.json`` written)."""
        if not (self.is_run() and self.result_path.is_file()):
            return False
        last, cfg = self.last()
        return int(last.get("epoch", 0)) >= cfg.epochs

    def result(self) -> dict:
        return json.loads(self.result_path.read_text())

    def load_models(self, ensemble: bool | None = None, device="cpu", overrides: dict | None = None) -> LoadedModels:
        """The kept epoch models (best first): all with the run's ``ensemble_top_k`` (or ``ensemble``),
        else the best. ``overrides`` change the returned config (e.g. test-time settings)."""
        cfg, _ = self.kept_epochs()
        cfg = cfg.replace(**(overrides or {}))
        entries = self.kept_epochs(cfg.ensemble_top_k if ensemble is None else ensemble)[1]
        models, files, intensity = [], [], None
        for e in entries:
            f = self.path / e["path"]
            ck, member_cfg = read_checkpoint(f)
            if member_cfg.model != cfg.model or member_cfg.spatial_dims != cfg.spatial_dims:
                raise CheckpointError(f"checkpoint: {f} is a {member_cfg.model} model, but {self.last_path} "
                                      f"says {cfg.model}")
            models.append(_model_from(f, ck, cfg, device))
            files.append(f)
            intensity = intensity or intensity_range_of(ck, cfg)  # every checkpoint of a run records it
        return LoadedModels(cfg, models, files, [int(e["epoch"]) for e in entries], self.path, intensity)

    def stored_predictions(self) -> dict | None:
        """``test_predictions.pt`` read and checked, or None when the run has none."""
        return load_predictions(self.predictions_path) if self.predictions_path.is_file() else None


def load_run_models(path: str | Path, device="cpu", overrides: dict | None = None) -> LoadedModels:
    """The models of a run directory (kept epochs per its ``ensemble_top_k``) or of one ``.pt`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint: no file at {path} (expected a run directory or a checkpoint)")
    if path.is_dir():
        return RunDir(path).load_models(device=device, overrides=overrides)
    ck, cfg = read_checkpoint(path)
    cfg = cfg.replace(**(overrides or {}))
    return LoadedModels(cfg, [_model_from(path, ck, cfg, device)], [path], [int(ck.get("epoch", -1))], path,
                        intensity_range_of(ck, cfg))


def run_config(path: str | Path) -> TrainConfig:
    """The config of a run directory or one checkpoint file (checked; no model is built)."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).last()[1]
    return read_checkpoint(path)[1]


# --- stored predictions -----------------------------------------------------------------------------
def inference_settings(cfg: TrainConfig) -> dict:
    """The config fields that change test-time predictions of fixed weights ("inference" role)."""
    d = cfg.to_dict()
    return {k: d[k] for k in fields_with_role(cfg, "inference")}


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
    """Write the predictions of the first ``len(predictions)`` images of ``split`` (module docstring)."""
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
            "predictions": [{k: torch.as_tensor(p[k]).detach().cpu() for k in keep} for p in predictions],
            "targets": [{k: torch.as_tensor(t[k]).detach().cpu() for k in ("boxes", "labels")} for t in targets],
        },
        path,
    )
    return Path(path)


def load_predictions(path: str | Path) -> dict:
    """Read a file written by :func:`save_predictions`; raises CheckpointError for another format."""
    data = load_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != PREDICTIONS_FORMAT:
        raise CheckpointError(f"{path} is not a {PREDICTIONS_FORMAT} file")
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
