"""Training: configs and presets, the data pipeline, the engine, checkpoints, one-call runs."""

from retina_unet.training.checkpoint import load_checkpoint, save_checkpoint, save_json
from retina_unet.training.config import PRESETS, TrainConfig, learning_rate, parse_override, preset
from retina_unet.training.data import BatchSampler, InputError, check_inputs, subset_indices
from retina_unet.training.engine import Trainer
from retina_unet.training.environment import environment, git_commit
from retina_unet.training.run import (
    build_from_config,
    ensure_dataset,
    evaluate_models,
    load_models,
    train_and_evaluate,
)

__all__ = [
    "PRESETS",
    "BatchSampler",
    "InputError",
    "TrainConfig",
    "Trainer",
    "build_from_config",
    "check_inputs",
    "ensure_dataset",
    "environment",
    "evaluate_models",
    "git_commit",
    "load_checkpoint",
    "load_models",
    "learning_rate",
    "parse_override",
    "preset",
    "save_checkpoint",
    "save_json",
    "subset_indices",
    "train_and_evaluate",
]
