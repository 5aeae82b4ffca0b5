"""Detectors for the Retina U-Net toy study, 2D and 3D: one seam (``Detector``), one registry.

>>> from retina_unet.models import build_model, model_config
>>> model = build_model("retina_unet", model_config(2, "cpu"))
"""

from retina_unet.models.config import SIZES, ModelConfig, model_config
from retina_unet.models.detector import Detector
from retina_unet.models.registry import MODEL_NAMES, build_model

__all__ = ["MODEL_NAMES", "SIZES", "Detector", "ModelConfig", "build_model", "model_config"]
