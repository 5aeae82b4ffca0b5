"""Checkpoints: atomic writes (temp file + fsync + rename) and the run directory layout.

Run directory::

    out_dir/
      last.pt              resume state: model, optimizer, sampler + RNG states, history, top-k list
      epoch_007.pt         one per kept top-k epoch: model weights + metadata
      history.json         the training curve so far (per epoch losses, val mAP, times)
      metrics.csv          tracked scalars per epoch (+ metrics_steps.csv per step, tensorboard/
                           event files): retina_unet.training.tracking
      test_predictions.pt  the evaluated test predictions (retina_unet.training.predictions)
      result.json          written by train_and_evaluate at the end

Every checkpoint carries ``config`` (TrainConfig as dict), ``seed``, ``epoch``, ``git_commit`` and
``environment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from retina_unet.atomic_io import atomic_write, write_json_atomic

LAST = "last.pt"


def epoch_file(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: readers never see half a file."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (NaN written as null by the caller's choice of values)."""
    write_json_atomic(path, obj, indent=2)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (our own files: full unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)
