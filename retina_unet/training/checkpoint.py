"""Checkpoints: atomic writes (temp file + fsync + rename) and the run directory layout.

Run directory::

    out_dir/
      last.pt              resume state: model, optimizer, sampler + RNG states, history, top-k list
      epoch_007.pt         one per kept top-k epoch: model weights + metadata
      history.json         the training curve so far (per epoch losses, val mAP, times)
      metrics.csv          tracked scalars per epoch (+ metrics_steps.csv per step, tensorboard/
                           event files): retina_unet.training.tracking
      test_predictions.pt  the evaluated test predictions (retina_unet.rundir)
      result.json          written by train_and_evaluate at the end

Every checkpoint carries ``config`` (TrainConfig as dict), ``seed``, ``epoch``, ``num_classes``,
``git_commit`` and ``environment``. Reading a run folder (checks, models, stored predictions) is
:mod:`retina_unet.rundir`; every ``.pt`` is loaded with ``torch.load(weights_only=True)`` (tensors
and plain containers only, nothing arbitrary is unpickled), here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

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


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project (damaged, truncated or foreign)."""


# What our checkpoints hold besides tensors and plain containers: torch.__version__ in the recorded
# environment, and numpy scalars in older training curves.
_SAFE_GLOBALS = [TorchVersion, np.dtype, np._core.multiarray.scalar, type(np.dtype(np.float64)),
                 type(np.dtype(np.float32)), type(np.dtype(np.int64))]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``.pt`` written by :func:`save_checkpoint` safely (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: one line naming the file when it cannot be read (truncated, damaged, not
            a torch file, or holding objects other than tensors and plain containers).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  torch.load raises many kinds on damaged bytes
        text = str(exc).strip()
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        raise CheckpointError(
            f"checkpoint: {path} cannot be read ({first}); it is damaged, truncated or not a checkpoint "
            f"written by `retina-unet train`"
        ) from exc
