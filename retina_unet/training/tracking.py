"""Experiment tracking with zero set-up: every training run writes its scalars to CSV and TensorBoard.

Files in the run directory (always on; a few kB per epoch):

- ``metrics.csv``: one row per epoch: ``epoch``, ``step`` (optimiser steps done), ``lr``, the mean
  loss terms, ``val_mAP``, ``val_ap_<class>``, ``train_s`` / ``val_s`` (seconds), ``data_s`` (time
  waiting for batches: ``sampler.next_batch`` and the copy to the device), ``compute_s``
  (``train_s - data_s``: forward, backward, optimiser step), ``data_fraction``, ``images_per_s``
  (training images, i.e. patches, per second of ``train_s``), ``peak_rss_mb`` (the process's peak
  resident memory so far, ``getrusage``), ``peak_cuda_mb`` (``torch.cuda.max_memory_allocated``
  during the epoch and its validation; empty on the CPU).
- ``metrics_steps.csv``: one row per optimiser step: ``step``, ``epoch``, ``lr``, the loss terms,
  ``data_s`` and ``step_s`` of that step.
- ``tensorboard/``: event files with the same scalars (per step under ``train_step/``, per epoch
  under ``train/``, ``val/``, ``perf/``, ``memory/``), viewable with ``tensorboard --logdir``.
  Epoch scalars sit at the global step of the epoch's last optimiser step, so the two kinds share
  one axis. Without the ``tensorboard`` package the CSV files are still written (one warning).

Resume: rows after the resumed epoch (written by an interrupted attempt) are dropped, and
TensorBoard purges events from the first step to be redone (``purge_step``); rows of epochs that
predate tracking are rebuilt from the history (without the timing and memory columns). Files are
rewritten whole and atomically after every epoch (temp name, then rename).
"""

from __future__ import annotations

import csv
import resource
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from retina_unet.atomic_io import write_csv_atomic

METRICS_CSV = "metrics.csv"
STEPS_CSV = "metrics_steps.csv"
TENSORBOARD_DIR = "tensorboard"
PERF_COLUMNS = ("data_s", "compute_s", "data_fraction", "images_per_s", "peak_rss_mb", "peak_cuda_mb")
_warned_no_tensorboard = False


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def flatten_record(record: Mapping) -> dict:
    """A history record as flat CSV cells: ``val_ap {1: x}`` -> ``val_ap_1``; None -> empty."""
    out = {}
    for k, v in record.items():
        if isinstance(v, Mapping):
            for sub, x in v.items():
                out[f"{k}_{sub}"] = "" if x is None else x
        else:
            out[k] = "" if v is None else v
    return out


def _summary_writer(log_dir: Path, purge_step: int | None):
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # the package is optional: degrade to CSV only
        if not _warned_no_tensorboard:
            warnings.warn(
                f"tensorboard is not installed ({exc}); training scalars go to {METRICS_CSV} only "
                "(pip install tensorboard for event files)",
                stacklevel=3,
            )
            _warned_no_tensorboard = True
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(rows: Sequence[dict], path: Path) -> None:
    columns: dict[str, None] = {}
    for r in rows:  # union of the keys, first-seen order
        columns.update(dict.fromkeys(r))
    write_csv_atomic(path, rows, list(columns))


class RunTracker:
    """Writes a run's scalars (see the module docstring); one per :meth:`Trainer.fit` call.

    Args:
        out_dir: the run directory.
        history: the training curve so far (one record per finished epoch; restored on resume).
        batches_per_epoch: optimiser steps per epoch (for the global step).
        batch_size: training images per step (for ``images_per_s``).
    """

    def __init__(self, out_dir: str | Path, history: Sequence[dict], batches_per_epoch: int, batch_size: int):
        self.out_dir = Path(out_dir)
        self.bpe, self.batch_size = int(batches_per_epoch), int(batch_size)
        done = len(history)
        kept = {int(r["epoch"]): r for r in _read_csv(self.out_dir / METRICS_CSV) if int(r["epoch"]) <= done}
        self.rows = [kept.get(int(h["epoch"])) or self._row(h) for h in history]
        self.steps = [r for r in _read_csv(self.out_dir / STEPS_CSV) if int(r["step"]) < done * self.bpe]
        self._flush_csv()  # drops rows of an interrupted attempt right away
        # purge_step hides events of steps to be redone (an interrupted attempt's) from TensorBoard
        self.writer = _summary_writer(self.out_dir / TENSORBOARD_DIR, done * self.bpe)

    def _row(self, record: Mapping) -> dict:
        flat = flatten_record(record)
        return {"epoch": flat.pop("epoch"), "step": int(record["epoch"]) * self.bpe, **flat}

    def log_step(self, step: int, epoch: int, lr: float, losses: Mapping[str, float], data_s: float,
                 step_s: float) -> None:
        """One optimiser step (``step`` 0-based over the run): CSV row and TensorBoard scalars."""
        named = {k if k == "loss" else f"loss_{k}": v for k, v in losses.items()}  # as in the history
        self.steps.append({"step": step, "epoch": epoch, "lr": lr, **named, "data_s": round(data_s, 6),
                           "step_s": round(step_s, 6)})
        if self.writer is not None:
            for k, v in named.items():
                self.writer.add_scalar(f"train_step/{k}", v, step)
            self.writer.add_scalar("train_step/lr", lr, step)

    def log_epoch(self, record: Mapping, data_s: float, device: torch.device) -> dict:
        """A finished epoch: ``record`` is the history entry; returns the CSV row (also written)."""
        train_s = float(record["train_s"])
        peak_cuda = None
        if device.type == "cuda":
            peak_cuda = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
        perf = {
            "data_s": data_s,
            "compute_s": train_s - data_s,
            "data_fraction": data_s / train_s if train_s > 0 else None,
            "images_per_s": self.bpe * self.batch_size / train_s if train_s > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": peak_cuda,
        }
        row = {**self._row(record), **{k: "" if v is None else round(v, 6) for k, v in perf.items()}}
        self.rows.append(row)
        self._flush_csv()
        if self.writer is not None:
            step = int(record["epoch"]) * self.bpe - 1  # the epoch's last optimiser step
            for k, v in record.items():
                if k.startswith("loss") or k == "lr":
                    self.writer.add_scalar(f"train/{k}", v, step)
            if record.get("val_mAP") is not None:
                self.writer.add_scalar("val/mAP", record["val_mAP"], step)
            for cls, ap in (record.get("val_ap") or {}).items():
                if ap is not None:
                    self.writer.add_scalar(f"val/ap_class{cls}", ap, step)
            for k in ("train_s", "val_s"):
                self.writer.add_scalar(f"perf/{k}", record[k], step)
            for k, v in perf.items():
                if v is not None:
                    self.writer.add_scalar(f"{'memory' if k.startswith('peak') else 'perf'}/{k}", v, step)
            self.writer.flush()
        return row

    def _flush_csv(self) -> None:
        for rows, name in ((self.rows, METRICS_CSV), (self.steps, STEPS_CSV)):
            if rows or (self.out_dir / name).exists():
                _write_csv(rows, self.out_dir / name)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
