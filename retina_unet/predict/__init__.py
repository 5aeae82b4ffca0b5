"""Running a trained model on your own images: ``predict`` (detections as CSV / JSON in a box
convention of your choice, optional overlays), the toy test set as input files to try it on, and the
best / worst overlays of a run (``overlays``). Uses :mod:`retina_unet.visualize` (never the reverse)."""

from retina_unet.predict.conventions import CONVENTIONS, boxes_from_convention, convert_boxes, get_convention
from retina_unet.predict.detections import evaluate_detection_files, read_detections
from retina_unet.predict.inputs import check_array, export_toy_inputs, read_ground_truth, scan_inputs
from retina_unet.predict.overlays import run_overlays
from retina_unet.predict.pipeline import predict_folder, run_predictor

__all__ = [
    "CONVENTIONS",
    "boxes_from_convention",
    "check_array",
    "convert_boxes",
    "evaluate_detection_files",
    "export_toy_inputs",
    "get_convention",
    "predict_folder",
    "read_detections",
    "read_ground_truth",
    "run_overlays",
    "run_predictor",
    "scan_inputs",
]
