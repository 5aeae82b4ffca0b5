"""Test-time inference: mirroring TTA, weighted box clustering (paper Eq. 1), top-k epoch ensembles,
and the one predict loop."""

from retina_unet.inference.loop import predict_images, shape_batches
from retina_unet.inference.predictor import MERGES, Predictor, predictor_for_config
from retina_unet.inference.tta import flip_boxes, flip_images, flip_seg, mirror_views
from retina_unet.inference.wbc import weighted_box_clustering

__all__ = [
    "MERGES",
    "Predictor",
    "flip_boxes",
    "flip_images",
    "flip_seg",
    "mirror_views",
    "predict_images",
    "predictor_for_config",
    "shape_batches",
    "weighted_box_clustering",
]
