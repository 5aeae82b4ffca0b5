"""``build_model(name, cfg)``: the one place model names map to classes."""

from __future__ import annotations

import importlib

from retina_unet.models.config import ModelConfig
from retina_unet.models.detector import Detector, channels_last_format
from retina_unet.models.detector import reads_masks as _reads_masks  # of a model or class; by name below

# name -> (module, class); imported on demand so one model's import cost is not everyone's
_REGISTRY = {
    "retina_net": ("retina_unet.models.retina", "RetinaNet"),
    "retina_unet": ("retina_unet.models.retina", "RetinaUNet"),
    "mask_rcnn": ("retina_unet.models.mask_rcnn", "MaskRCNN"),
    "faster_rcnn_plus": ("retina_unet.models.mask_rcnn", "FasterRCNNPlus"),
    "detunet": ("retina_unet.models.detunet", "DetUNet"),
    "ufrcnn_plus": ("retina_unet.models.mask_rcnn", "UFRCNNPlus"),
}


def model_class(name: str) -> type[Detector]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def reads_masks(name: str) -> bool:
    """Whether model ``name`` trains on segmentation masks (a mask head, a segmentation loss, or
    both). The ones that do not (Retina Net, Faster R-CNN+) see the same data on two tasks whose
    images agree and whose masks differ (``donuts_shape`` / ``donuts_pattern``, docs/conventions.md)."""
    return _reads_masks(model_class(name))


MODEL_NAMES = ("retina_net", "retina_unet", "mask_rcnn", "faster_rcnn_plus", "detunet", "ufrcnn_plus")


def build_model(name: str, cfg: ModelConfig) -> Detector:
    """A fresh, randomly initialised model ``name`` (one of ``MODEL_NAMES``) for ``cfg``."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig (see model_config()), got {type(cfg).__name__}")
    model = model_class(name)(cfg)
    if cfg.channels_last:
        model.to(memory_format=channels_last_format(cfg.spatial_dims))
    return model
