"""The paper's evaluation: matching at IoU > 0.1, COCO 101-point AP per class, mAP, patient-level AP.

See :mod:`retina_unet.evaluation.matching` and :mod:`retina_unet.evaluation.ap` for the exact
definitions of every reported number.
"""

from retina_unet.evaluation.ap import (
    RECALL_POINTS,
    average_precision,
    evaluate_detections,
    patient_level_ap,
)
from retina_unet.evaluation.matching import ImageClassMatches, match_image_class

__all__ = [
    "RECALL_POINTS",
    "ImageClassMatches",
    "average_precision",
    "evaluate_detections",
    "match_image_class",
    "patient_level_ap",
]
