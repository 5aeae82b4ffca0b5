"""Retina U-Net toy experiments: detection ops (2D/3D NMS, RoIAlign), models and the scaling study."""

from retina_unet._extension import BuildInfo, build_info

__all__ = ["BuildInfo", "build_info", "__version__"]
__version__ = "0.1.0"
