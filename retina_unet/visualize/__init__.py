"""Overlays of boxes and segmentation on 2D images and 3D volumes, per-case scores, best / worst grids."""

from retina_unet.visualize.overlays import case_panels, draw_case, figure_size_px, render_png
from retina_unet.visualize.ranking import CaseScore, case_score, draw_best_worst, rank_cases

__all__ = [
    "CaseScore",
    "case_panels",
    "case_score",
    "draw_best_worst",
    "draw_case",
    "figure_size_px",
    "rank_cases",
    "render_png",
]
