"""The seam between the study and the training engine.

The study never builds a model: it asks an :class:`Engine` to turn a :class:`RunSpec` into a config
(``resolve``), a config into a plain dict (``config_dict``, which is hashed to name the run) and a
config into a result (``run``). :class:`TrainingEngine` is the real one (``retina_unet.training``);
tests pass fakes with the same four methods. Engines are pickled into worker processes and Ray
tasks, so they hold no state beyond plain fields.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Protocol

from retina_unet.study.definition import RunSpec

# Keys that say how or where a run executes, not what it computes, besides the TrainConfig fields
# with the "not_identity" role (device, num_threads): left out of run hashes so that the same
# experiment on another machine or device is recognised as the same run (engines other than
# TrainingEngine, e.g. the test fakes, may carry these).
NON_SEMANTIC_KEYS = frozenset({"num_workers", "progress", "data_root", "out_dir"})


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config dict that names a run (hashed by ``execute.config_hash``):
    :func:`retina_unet.training.config.identity_dict` (no "not_identity" fields; fields added later
    only when they differ from their default) minus :data:`NON_SEMANTIC_KEYS`."""
    from retina_unet.training.config import identity_dict

    return {k: v for k, v in identity_dict(config).items() if k not in NON_SEMANTIC_KEYS}


class Engine(Protocol):
    def resolve(self, spec: RunSpec) -> Any: ...
    def config_dict(self, cfg: Any) -> dict[str, Any]: ...
    def run(self, cfg: Any, out_dir: Path, data_root: Path | None, threads: int | None) -> dict[str, Any]: ...
    def catalogue(self) -> dict[str, Any]: ...


class TrainingEngine:
    """``retina_unet.training``: ``preset(...)`` -> ``TrainConfig``; ``train_and_evaluate`` -> result."""

    def resolve(self, spec: RunSpec) -> Any:
        from retina_unet.training import preset

        return preset(spec.train_preset, spec.dim, **spec.preset_kwargs())

    def config_dict(self, cfg: Any) -> dict[str, Any]:
        return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)

    def run(self, cfg: Any, out_dir: Path, data_root: Path | None, threads: int | None) -> dict[str, Any]:
        from retina_unet.pipeline import train_and_evaluate

        if threads is not None and getattr(cfg, "num_threads", None) != threads:
            cfg = cfg.replace(num_threads=threads)  # the backend's thread budget wins (not hashed)
        # resume=True: a run killed mid-training continues from its last checkpoint in out_dir.
        kwargs: dict[str, Any] = {"progress": False, "resume": True}
        if data_root is not None:
            kwargs["data_root"] = data_root
        return train_and_evaluate(cfg, out_dir, **kwargs)

    def default_data_root(self) -> Path:
        """The engine's dataset cache as an absolute path (Ray workers do not share our cwd)."""
        from retina_unet.data import DEFAULT_DATA_ROOT

        return Path(DEFAULT_DATA_ROOT).resolve()

    def catalogue(self) -> dict[str, Any]:
        """Known tasks, models, presets and the training-pool size, from the packages that own them
        (``toy_data.TASKS``, ``retina_unet.models.MODEL_NAMES``, ``retina_unet.training.PRESETS``)."""
        import toy_data
        from retina_unet.models import MODEL_NAMES
        from retina_unet.training import PRESETS

        # pool_size None: the pool is checked per run against the resolved config's pool_train.
        return {"tasks": tuple(toy_data.TASKS), "models": tuple(MODEL_NAMES), "presets": tuple(PRESETS),
                "pool_size": None}


def set_torch_threads(threads: int) -> None:
    """Pin intra-op threads for this process (worker processes and Ray tasks call this first)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
