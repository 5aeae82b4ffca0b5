"""A fake training engine for fast tests of the study's bookkeeping (no torch training).

``FakeEngine`` resolves a :class:`RunSpec` to a plain dict and "trains" by sleeping, writing a
checkpoint-like file and returning a result shaped like ``train_and_evaluate``'s, with a
deterministic mAP in which segmentation supervision helps more as data shrinks. It appends one
line per started run to ``log`` (a file), so tests can count runs across processes.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from retina_unet.study.definition import DEFAULT_POOL_SIZE, RunSpec
from retina_unet.study.engine import TrainingEngine

SEG = {"retina_unet": 1.0, "ufrcnn_plus": 1.0}


def fake_map(model: str, task: str, n_train: int, seed: int) -> float:
    """Retina U-Net ~0.95 everywhere; models without segmentation lose more the less data they get."""
    shrink = math.log(1000 / n_train) / math.log(50)  # 0 at 1000, 1 at 20
    loss = (0.05 if model in SEG else 0.45) * shrink if task != "circles_scale" else 0.1 * shrink
    noise = ((seed * 7919 + n_train * 31 + len(model)) % 17 - 8) / 400  # +-0.02, deterministic
    return round(min(1.0, max(0.0, 0.95 - loss + noise)), 6)


class FakeEngine:
    def __init__(self, delay: float = 0.0, fail: tuple[str, ...] = (), log: str | None = None,
                 pool_size: int = DEFAULT_POOL_SIZE):
        self.delay, self.fail, self.log, self.pool_size = delay, tuple(fail), log, pool_size

    def catalogue(self) -> dict[str, Any]:
        return TrainingEngine().catalogue()  # the real names: a fake run of an unknown model is refused too

    def resolve(self, spec: RunSpec) -> dict[str, Any]:
        return {"preset": spec.train_preset, "spatial_dims": spec.dim, **spec.preset_kwargs(),
                "pool_train": self.pool_size, "device": "cpu"}

    def config_dict(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return dict(cfg)

    def run(self, cfg: dict[str, Any], out_dir: Path, data_root: Path | None, threads: int | None) -> dict[str, Any]:
        label = f"{cfg['task']}-{cfg['spatial_dims']}d-{cfg['model']}-n{cfg['n_train']}-s{cfg['seed']}"
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"label": label, "pid": os.getpid(), "t": time.time()}) + "\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "last.pt").write_text("fake checkpoint")
        time.sleep(self.delay)
        if label in self.fail:
            raise RuntimeError(f"fake failure of {label}")
        m = fake_map(cfg["model"], cfg["task"], cfg["n_train"], cfg["seed"])
        return {"mAP": m, "ap": {"1": m + 0.01, "2": m - 0.01}, "patient_mAP": m, "patient_ap": {"1": m, "2": m},
                "curve": [{"epoch": 0, "val_mAP": m}], "train_s": self.delay, "wall_s": self.delay,
                "config": cfg, "seed": cfg["seed"], "n_train": cfg["n_train"], "git_commit": "fake",
                "environment": {}, "resumed": False, "checkpoint": str(out_dir / "last.pt"), "threads": threads}


def read_log(path: str | os.PathLike[str]) -> list[str]:
    try:
        return [json.loads(line)["label"] for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
