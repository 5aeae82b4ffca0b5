"""Seeded, reproducible toy datasets of the Retina U-Net paper (2D) and their 3D counterparts.

Public API::

    TASKS, TaskSpec, task_spec(name, dim=2, **overrides)
    generate_sample(spec, split_seed, index) -> Sample
    generate_split(spec, split_seed, n, workers=1) -> dict[str, np.ndarray]
    write_dataset(spec, out_dir, *, seed=0, n_train=1000, n_val=500, n_test=1000, workers=None, progress=True)
    load_dataset(path, verify=True) -> ToyDataset;  DatasetError

See toy_data/README.md and docs/conventions.md ("The toy tasks") for the task semantics.
"""

from .generate import GENERATOR_VERSION, Sample, generate_sample, generate_split
from .spec import TASKS, TaskSpec, task_spec
from .storage import SPLITS, DatasetError, SplitArrays, ToyDataset, load_dataset, split_seeds, write_dataset

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "TASKS",
    "DatasetError",
    "Sample",
    "SplitArrays",
    "TaskSpec",
    "ToyDataset",
    "generate_sample",
    "generate_split",
    "load_dataset",
    "split_seeds",
    "task_spec",
    "write_dataset",
]
