"""Data below training and inference: the toy-dataset cache, batches and samplers, lazy images and
the objects of an image (used by training, evaluation, ``predict``, ``overlays`` and the study)."""

from retina_unet.data.batches import (
    PADDING_LABELS,
    BatchSampler,
    InputError,
    SplitImages,
    check_inputs,
    crop_boxes,
    image_objects,
    split_targets,
    subset_indices,
    training_intensity_range,
)
from retina_unet.data.cache import DEFAULT_DATA_ROOT, dataset_key, ensure_dataset, task_num_classes

__all__ = [
    "DEFAULT_DATA_ROOT",
    "PADDING_LABELS",
    "BatchSampler",
    "InputError",
    "SplitImages",
    "check_inputs",
    "crop_boxes",
    "dataset_key",
    "ensure_dataset",
    "image_objects",
    "split_targets",
    "subset_indices",
    "task_num_classes",
    "training_intensity_range",
]
