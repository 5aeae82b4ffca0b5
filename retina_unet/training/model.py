"""The model of a training config: ``cfg.model`` built with ``cfg.model_size`` and ``cfg.model_overrides``."""

from __future__ import annotations

import torch

from retina_unet.models import build_model, model_config


def build_from_config(cfg, num_classes: int, seed: int | None = None) -> torch.nn.Module:
    """Build the model of ``cfg`` (a ``TrainConfig``) for ``num_classes`` foreground classes (the
    task's, :func:`retina_unet.data.task_num_classes`, or a checkpoint's); with ``seed`` the global
    RNG is seeded first (initialisation)."""
    if seed is not None:
        torch.manual_seed(seed)
    mcfg = model_config(
        cfg.spatial_dims,
        cfg.model_size,
        **{"num_classes": int(num_classes), "in_channels": 1, **cfg.model_overrides},
    )
    return build_model(cfg.model, mcfg)
