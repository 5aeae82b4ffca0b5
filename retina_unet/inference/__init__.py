"""Test-time inference: mirroring TTA, weighted box clustering (paper Eq. 1), top-k epoch ensembles."""

from retina_unet.inference.predictor import MERGES, Predictor
from retina_unet.inference.tta import flip_boxes, flip_images, flip_seg, mirror_views
from retina_unet.inference.wbc import weighted_box_clustering

__all__ = [
    "MERGES",
    "Predictor",
    "flip_boxes",
    "flip_images",
    "flip_seg",
    "mirror_views",
    "weighted_box_clustering",
]
