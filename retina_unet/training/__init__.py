"""Training: the config (field roles, presets, the one override parser), the engine, checkpoints,
tracking. One run end to end (train, then evaluate) is :func:`retina_unet.pipeline.train_and_evaluate`."""

from retina_unet.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, save_json
from retina_unet.training.config import (
    PRESETS,
    ROLES,
    TrainConfig,
    fields_with_role,
    identity_dict,
    learning_rate,
    parse_override,
    parse_overrides,
    preset,
)
from retina_unet.training.engine import Trainer

__all__ = [
    "PRESETS",
    "ROLES",
    "CheckpointError",
    "TrainConfig",
    "Trainer",
    "fields_with_role",
    "identity_dict",
    "learning_rate",
    "load_checkpoint",
    "parse_override",
    "parse_overrides",
    "preset",
    "save_checkpoint",
    "save_json",
]
