"""The training loop: epochs of class-balanced batches, validation mAP per epoch, top-k checkpoints,
atomic resume state, a recorded training curve.

Reproducibility on CPU: the caller seeds the global RNG before building the model (initialisation);
the batch sampler has its own generator; both states (and the global RNG state, which models may use
for e.g. negative mining) are saved in ``last.pt`` after every epoch, so a resumed run continues
exactly where the interrupted one would have been.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from retina_unet.data import BatchSampler, SplitImages, split_targets, training_intensity_range
from retina_unet.environment import autocast_for, environment, git_commit, precision_of, resolve_device
from retina_unet.evaluation import evaluate_detections
from retina_unet.inference import predict_images
from retina_unet.models.detector import padding_to_multiple, reads_masks
from retina_unet.training.checkpoint import (
    LAST,
    CheckpointError,
    epoch_file,
    load_checkpoint,
    save_checkpoint,
    save_json,
)
from retina_unet.training.config import TrainConfig, fields_with_role, learning_rate
from retina_unet.training.tracking import RunTracker


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params``, as PyTorch's fused implementation where every parameter
    is on the CPU or a CUDA device: the same update rule in one kernel instead of a Python loop of
    ~5 ops per parameter tensor (Retina Net ``cpu`` train step 60 -> 56 ms on one thread;
    docs/speed.md, "The levers"). It rounds differently from the loop, so trajectories agree to
    float32 rounding only."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, fused=fused)


def _to_device(images: torch.Tensor, targets: list[dict], device: torch.device):
    return images.to(device, non_blocking=True), [{k: v.to(device) for k, v in t.items()} for t in targets]


def padded_patch_shape(patch_size, multiple) -> tuple[int, ...] | None:
    """The shape a training patch is padded to before the network (``Detector.pad``), or None when
    ``patch_size`` is None or already a multiple of ``multiple`` on every axis."""
    if patch_size is None or multiple is None:
        return None
    extra = padding_to_multiple(patch_size, multiple)
    return tuple(int(p) + e for p, e in zip(patch_size, extra, strict=True)) if any(extra) else None


def warn_padded_patches(patch_size, multiple) -> None:
    """Warn when training patches are padded: the padding costs compute and the network trains on
    replicate-padded borders that whole test images never have (a 48^3 patch on a model that needs
    multiples of 32 runs at 64^3: 2.4x the voxels, 58 % of them padding; docs/models.md, "3D")."""
    padded = padded_patch_shape(patch_size, multiple)
    if padded is None:
        return
    ratio = float(np.prod(padded)) / float(np.prod(patch_size))
    warnings.warn(
        f"patch_size {tuple(patch_size)} is not a multiple of the model's input multiple {tuple(multiple)}: "
        f"every training patch is padded to {padded} ({ratio:.1f}x the pixels, replicate-padded borders); "
        f"choose a patch_size that is a multiple of {tuple(multiple)}",
        stacklevel=3,
    )


class Trainer:
    """Trains one model per :class:`TrainConfig`; writes everything under ``out_dir``.

    Args:
        cfg: the configuration. model: built (and seeded) by the caller.
        train_split / val_split: splits (see :mod:`retina_unet.data.batches`).
        train_indices: the training subset. num_classes: foreground classes.
        out_dir: run directory (see :mod:`retina_unet.training.checkpoint`).
        progress: show tqdm bars with the running losses.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        train_split,
        val_split,
        train_indices,
        num_classes: int,
        out_dir: str | Path,
        progress: bool = True,
    ):
        self.cfg, self.model, self.val_split = cfg, model, val_split
        self.out_dir = Path(out_dir)
        self.device = resolve_device(cfg.device)
        self.model.to(self.device)
        self.progress = progress
        self.num_classes = num_classes
        self.sampler = BatchSampler(
            train_split,
            train_indices,
            cfg.batch_size,
            num_classes,
            cfg.class_balanced,
            cfg.patch_size,
            cfg.patch_fg_prob,
            seed=cfg.seed,
            with_masks=reads_masks(model),
        )
        warn_padded_patches(cfg.patch_size, getattr(model, "required_multiple", None))
        self.optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
        n_val = (
            len(val_split.images) if cfg.val_subset is None else min(cfg.val_subset, len(val_split.images))
        )
        self.val_indices = list(range(n_val))
        self.epoch = 0  # completed epochs
        self.history: list[dict] = []
        self.top_k: list[dict] = []  # [{"epoch", "val_mAP", "path"}], best first
        self._tracker: RunTracker | None = None  # metrics.csv + TensorBoard, opened by fit()
        self.meta = {
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "num_classes": num_classes,
            "git_commit": git_commit(),
            "environment": environment(),
            "intensity_range": list(training_intensity_range(cfg)),  # the input contract of predict
            "precision": precision_of(self.device, cfg.amp, cfg.cpu_bf16),
        }

    # --- state -----------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            **self.meta,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.random.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "history": self.history,
            "top_k": self.top_k,
        }

    def try_resume(self) -> bool:
        """Restore ``out_dir/last.pt`` if present. Returns True when resumed.

        The saved config must equal ``cfg`` except for the fields with the ``"resume_may_change"``
        role (``retina_unet.training.config``). A damaged ``last.pt`` is a one-line
        :class:`CheckpointError` that names it and says how to start over.
        """
        path = self.out_dir / LAST
        if not path.is_file():
            return False
        try:
            ck = load_checkpoint(path, map_location="cpu")  # RNG states must stay CPU tensors
            if not isinstance(ck, dict) or not {"config", "model", "optimizer", "sampler"} <= set(ck):
                raise CheckpointError(f"checkpoint: {path} is not a resume state (no model/optimizer/sampler)")
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}; cannot resume the run in {self.out_dir}: start over with --no-resume "
                f"(train_and_evaluate(resume=False)) or delete {path}"
            ) from exc
        may_change = set(fields_with_role(self.cfg, "resume_may_change"))
        now = self.cfg.to_dict()
        diff = {
            k: (ck["config"].get(k), v)
            for k, v in now.items()
            if ck["config"].get(k) != v and k not in may_change
        }
        if diff:
            raise ValueError(
                f"{path} was written with a different config (saved, now): {diff}; "
                f"use a fresh out_dir or the same config"
            )
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.sampler.load_state_dict(ck["sampler"])
        torch.random.set_rng_state(ck["torch_rng"])
        if ck.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        self.epoch, self.history, self.top_k = ck["epoch"], ck["history"], ck["top_k"]
        self.meta["config"] = now  # test-time settings may have changed ("resume_may_change" fields)
        return True

    # --- loop ------------------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> list[dict]:
        """Train until ``cfg.epochs`` epochs are done (or ``stop_after`` more epochs, for tests/pauses).

        Returns the training curve: one dict per epoch with mean losses, ``val_mAP``,
        ``val_ap`` per class, ``train_s`` and ``val_s``.
        """
        done_now = 0
        try:
            while self.epoch < self.cfg.epochs and (stop_after is None or done_now < stop_after):
                if self._tracker is None:  # after try_resume: it truncates to the restored history
                    self._tracker = RunTracker(self.out_dir, self.history, self.cfg.batches_per_epoch,
                                               self.cfg.batch_size)
                self._train_epoch()
                done_now += 1
        finally:
            if self._tracker is not None:
                self._tracker.close()
                self._tracker = None
        return self.history

    def _autocast(self):
        return autocast_for(self.device, self.cfg.amp, self.cfg.cpu_bf16)

    def _train_epoch(self) -> None:
        cfg, epoch = self.cfg, self.epoch + 1
        self.model.train()
        sums: dict[str, float] = {}
        data_s = 0.0  # waiting for batches (sampler + copy to the device), for tracking
        t0 = time.perf_counter()
        # Updated by hand after each step: iterating a tqdm only publishes its count when it redraws,
        # so a short epoch would end on "0/2" with the running sums divided by a stale count.
        bar = tqdm(
            total=cfg.batches_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for i in range(cfg.batches_per_epoch):
            lr = learning_rate(cfg, (epoch - 1) * cfg.batches_per_epoch + i)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            t_step = time.perf_counter()
            images, targets = _to_device(*self.sampler.next_batch(), self.device)
            t_data = time.perf_counter() - t_step
            data_s += t_data
            with self._autocast():
                losses = self.model.losses(images, targets)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"epoch {epoch}: non-finite loss {loss.item()} ({ {k: float(v.detach()) for k, v in losses.items()} })"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            step_losses = {k: float(v.detach()) for k, v in losses.items()}  # syncs: step time is real
            for k, v in step_losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if self._tracker is not None:
                step = (epoch - 1) * cfg.batches_per_epoch + i
                self._tracker.log_step(step, epoch, lr, step_losses, t_data, time.perf_counter() - t_step)
            bar.set_postfix({k: f"{sums[k] / (i + 1):.3f}" for k in list(sums)[:4]}, refresh=False)
            bar.update(1)
        bar.close()
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        validated = epoch >= min(cfg.val_from_epoch, cfg.epochs)
        val = self.validate() if validated else {"mAP": None, "ap": {}}
        self.epoch = epoch
        record = {
            "epoch": epoch,
            **{f"loss_{k}" if k != "loss" else "loss": v / cfg.batches_per_epoch for k, v in sums.items()},
            "val_mAP": val["mAP"],
            "val_ap": val["ap"],
            "lr": lr,  # at the epoch's last step
            "train_s": train_s,
            "val_s": time.perf_counter() - t1,
        }
        self.history.append(record)
        dropped = self._update_top_k(epoch, val["mAP"]) if validated else []
        save_checkpoint(self.state(), self.out_dir / LAST)
        for e in dropped:  # only after last.pt no longer lists them
            (self.out_dir / e["path"]).unlink(missing_ok=True)
        save_json(self.history, self.out_dir / "history.json")
        if self._tracker is not None:
            self._tracker.log_epoch(record, data_s, self.device)
        if self.progress:
            tqdm.write(
                f"epoch {epoch}: loss {record['loss']:.4f}  val mAP {_fmt(val['mAP'])}  ({train_s:.0f}s train)"
            )

    def validate(self) -> dict:
        """Validation mAP of the current weights (no TTA) on the fixed validation subset."""
        self.model.eval()
        with self._autocast():
            preds = predict_images(
                self.model.predict, SplitImages(self.val_split, self.val_indices), self.cfg.val_batch_size,
                self.device,
            )
        targets = split_targets(self.val_split, self.val_indices)
        self.model.train()
        res = evaluate_detections(
            preds, targets, self.num_classes, self.cfg.iou_threshold, self.cfg.score_threshold
        )
        if res["mAP"] is None:
            res["mAP"] = 0.0
        return res

    def _update_top_k(self, epoch: int, val_map: float) -> list[dict]:
        """Keep the k best epochs by validation mAP (ties: the later epoch wins; it trained longer)."""
        entry = {"epoch": epoch, "val_mAP": float(val_map), "path": epoch_file(epoch)}
        ranked = sorted(self.top_k + [entry], key=lambda e: (-e["val_mAP"], -e["epoch"]))
        keep, drop = ranked[: self.cfg.top_k], ranked[self.cfg.top_k :]
        if entry in keep:
            save_checkpoint(
                {**self.meta, "epoch": epoch, "val_mAP": float(val_map), "model": self.model.state_dict()},
                self.out_dir / entry["path"],
            )
        self.top_k = keep
        return [e for e in drop if e is not entry]


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"
