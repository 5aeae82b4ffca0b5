"""The paper's evaluation (matching at IoU > 0.1, COCO 101-point AP per class, mAP, patient-level AP)
and the richer metrics built on the same matching: AP over an IoU grid and its COCO-style average,
FROC / CPM, per-case scores, PR and FROC figures.

``docs/metrics.md`` and the module docstrings of :mod:`~retina_unet.evaluation.matching`,
:mod:`~retina_unet.evaluation.ap`, :mod:`~retina_unet.evaluation.froc`,
:mod:`~retina_unet.evaluation.metrics` and :mod:`~retina_unet.evaluation.per_case` define every
reported number. Figures and file export (matplotlib) are imported lazily from
:mod:`~retina_unet.evaluation.plots` and :mod:`~retina_unet.evaluation.export`.
"""

from retina_unet.evaluation.ap import (
    RECALL_POINTS,
    average_precision,
    evaluate_detections,
    interpolated_precision,
    patient_level_ap,
)
from retina_unet.evaluation.froc import FROC_FP_RATES, froc, froc_curve, sensitivity_at
from retina_unet.evaluation.matching import ImageClassMatches, match_dataset, match_image_class
from retina_unet.evaluation.metrics import COCO_IOU_GRID, PAPER_IOU_GRID, detection_metrics, iou_grid
from retina_unet.evaluation.per_case import per_case_rows
from retina_unet.evaluation.sampling_error import bootstrap_map

__all__ = [
    "COCO_IOU_GRID",
    "FROC_FP_RATES",
    "PAPER_IOU_GRID",
    "RECALL_POINTS",
    "ImageClassMatches",
    "average_precision",
    "bootstrap_map",
    "detection_metrics",
    "evaluate_detections",
    "froc",
    "froc_curve",
    "interpolated_precision",
    "iou_grid",
    "match_dataset",
    "match_image_class",
    "patient_level_ap",
    "per_case_rows",
    "sensitivity_at",
]
