"""The toy data-size scaling study: definitions and presets, a resumable runner (local or Ray), the report.

``python -m retina_unet.study run --preset quick`` runs the study into ``studies/quick`` and
``... report --out studies/quick`` writes ``studies/quick/report/README.md``. See :mod:`retina_unet.study.cli`.
"""

from retina_unet.study.backends import LocalBackend, RayBackend
from retina_unet.study.definition import PRESETS, RunSpec, StudyDefinition, StudyError, preset
from retina_unet.study.engine import Engine, TrainingEngine
from retina_unet.study.runner import SweepSummary, run_study, study_status
from retina_unet.study.store import StudyFolder

__all__ = [
    "PRESETS", "Engine", "LocalBackend", "RayBackend", "RunSpec", "StudyDefinition", "StudyError", "StudyFolder",
    "SweepSummary", "TrainingEngine", "preset", "run_study", "study_status",
]
