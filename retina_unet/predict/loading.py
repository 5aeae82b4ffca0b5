"""Load what ``predict`` runs: a run directory (top-k ensemble, as ``evaluate``) or one checkpoint.

Checkpoints handed to ``predict`` may come from anywhere, so every file is first read with
``torch.load(weights_only=True)`` (tensors and plain containers only; no arbitrary unpickling)
and checked for the keys our checkpoints carry, the model name and the config, before any model
is built. Each failure raises :class:`CheckpointError` naming the file and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.torch_version import TorchVersion

from retina_unet.models import MODEL_NAMES
from retina_unet.training.checkpoint import LAST
from retina_unet.training.config import TrainConfig
from retina_unet.training.run import build_from_config, load_models

REQUIRED_KEYS = ("config", "model")


class CheckpointError(ValueError):
    """A path that is not a usable checkpoint or run directory of this project."""


@dataclass
class LoadedModels:
    """Models ready for :class:`retina_unet.inference.Predictor`.

    Attributes:
        cfg: the run's :class:`TrainConfig` (test-time settings: ``tta``, ``merge``, ...).
        intensity_range: (low, high) input intensities of training (checkpoint key
            ``intensity_range``; older checkpoints: derived from the config's toy task).
        models: detectors in eval mode on ``device``, best epoch first.
        files: the checkpoint files the models came from.
        source: the path given (run directory or file).
    """

    cfg: TrainConfig
    models: list[torch.nn.Module]
    files: list[Path]
    source: Path
    intensity_range: tuple[float, float] | None = None  # what the models trained on (None: unknown)

    @property
    def spatial_dims(self) -> int:
        return self.models[0].spatial_dims

    @property
    def in_channels(self) -> int:
        return int(self.models[0].cfg.in_channels)

    @property
    def num_classes(self) -> int:
        return int(self.models[0].num_classes)


def read_checkpoint(path: str | Path) -> tuple[dict, TrainConfig]:
    """Read and check one checkpoint file; returns (the checkpoint dict, its TrainConfig).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a torch file, not a checkpoint of this project (a dict with "config"
            and "model"), an unknown model name or an invalid config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        with torch.serialization.safe_globals([TorchVersion]):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  torch.load raises many kinds on foreign bytes (KeyError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint: {path} is not a checkpoint of this project (torch.load with weights_only=True "
            f"failed: {first[:200]}); expected an epoch_*.pt or last.pt written by `retina-unet train`"
        ) from exc
    if not isinstance(ck, dict) or any(k not in ck for k in REQUIRED_KEYS):
        what = sorted(ck)[:8] if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(
            f"checkpoint: {path} is not a checkpoint of this project: expected a dict with keys "
            f"{list(REQUIRED_KEYS)}, got {what}"
        )
    if not isinstance(ck["config"], dict):
        raise CheckpointError(
            f"checkpoint: {path}: 'config' must be a dict, got {type(ck['config']).__name__}"
        )
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
        raise CheckpointError(
            f"checkpoint: {path}: 'model' must be a state dict, got {type(ck['model']).__name__}"
        )
    return ck, cfg


def intensity_range_of(ck: dict, cfg: TrainConfig) -> tuple[float, float] | None:
    """The training intensity range a checkpoint records, else the one its config's toy task implies
    (checkpoints written before the key existed), else None."""
    rec = ck.get("intensity_range")
    if isinstance(rec, (list, tuple)) and len(rec) == 2 and all(isinstance(v, (int, float)) for v in rec):
        return float(rec[0]), float(rec[1])
    try:
        from retina_unet.training.data import training_intensity_range

        return training_intensity_range(cfg)
    except (ImportError, ValueError, TypeError):
        return None


def load_for_prediction(path: str | Path, device: str | torch.device = "cpu") -> LoadedModels:
    """The models ``predict`` runs for ``path``.

    A run directory gives the same models ``evaluate --checkpoint RUN_DIR`` uses: the kept top-k
    epochs (best first) when the run's ``ensemble_top_k`` is on, else the best epoch
    (:func:`retina_unet.training.run.load_models`). A single ``.pt`` file gives that one model.
    """
    path = Path(path)
    if path.is_dir():
        last = path / LAST
        if not last.is_file():
            raise CheckpointError(
                f"checkpoint: {path} is a folder but not a run directory (no {LAST}); pass a run directory "
                f"written by `retina-unet train` or one epoch_*.pt file"
            )
        ck, cfg = read_checkpoint(last)
        entries = ck.get("top_k")
        if (
            not isinstance(entries, list)
            or not entries
            or not all(isinstance(e, dict) and "path" in e for e in entries)
        ):
            raise CheckpointError(
                f"checkpoint: {last} lists no kept epochs ('top_k'); the run has not finished an epoch"
            )
        entries = entries if cfg.ensemble_top_k else entries[:1]
        files = [path / e["path"] for e in entries]
        for f in files:
            _, member_cfg = read_checkpoint(f)
            if member_cfg.model != cfg.model or member_cfg.spatial_dims != cfg.spatial_dims:
                raise CheckpointError(
                    f"checkpoint: {f} is a {member_cfg.model} model, but {last} says {cfg.model}"
                )
        try:
            _, models, _ = load_models(path, ensemble=cfg.ensemble_top_k, device=device)
        except RuntimeError as exc:  # state dict does not fit the model of the config
            raise CheckpointError(
                f"checkpoint: the weights in {path} do not fit its {cfg.model} config: {exc}"
            ) from exc
        return LoadedModels(cfg, models, files, path, intensity_range_of(ck, cfg))
    ck, cfg = read_checkpoint(path)
    model = build_from_config(cfg, num_classes=int(ck.get("num_classes", 2)))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint: the weights in {path} do not fit its {cfg.model} config: {exc}"
        ) from exc
    return LoadedModels(cfg, [model.to(device).eval()], [path], path, intensity_range_of(ck, cfg))
