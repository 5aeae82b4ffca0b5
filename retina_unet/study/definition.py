"""What a study is: a grid of tasks x models x training sizes x seeds x dimensions, and its presets.

A :class:`StudyDefinition` is frozen and hashed; the hash is written into the study folder so that a
folder can only ever hold the results of one definition. :meth:`StudyDefinition.runs` expands the
grid into :class:`RunSpec` s, seed-major, so that a partly finished study already holds complete
curves for its first seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retina_unet.study._hash import stable_hash

SCHEMA_VERSION = 1

# The names the training engine and the toy-data generator accept. Used when those packages
# cannot be imported (the study layer must still validate a definition and print `status`).
DEFAULT_POOL_SIZE = 1000  # toy_data's default training pool (spec section 1)
GRID_KEYS = ("task", "spatial_dims", "model", "n_train", "seed")
GRID_AXES = ("tasks", "models", "n_train", "seeds", "dims")  # may grow in a study folder
PROTOCOL_KEYS = ("train_preset", "overrides")  # change what every run computes: fixed per folder


def _freeze(v: Any) -> Any:
    """Lists (from JSON) to tuples, recursively, so a definition stays hashable."""
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


class StudyError(ValueError):
    """A study that cannot run as asked; raised before anything runs and before anything is written."""


@dataclass(frozen=True)
class RunSpec:
    """One point of the grid: everything the training engine's ``preset`` needs to build a config."""

    task: str
    dim: int
    model: str
    n_train: int
    seed: int
    train_preset: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """Human-readable prefix of the run's file names, e.g. ``donuts_shape-2d-retina_unet-n50-s0``."""
        return f"{self.task}-{self.dim}d-{self.model}-n{self.n_train}-s{self.seed}"

    def preset_kwargs(self) -> dict[str, Any]:
        return dict(model=self.model, task=self.task, n_train=self.n_train, seed=self.seed, **dict(self.overrides))


@dataclass(frozen=True)
class StudyDefinition:
    """A sweep. Every field is part of the study's hash; change any and it is a different study."""

    name: str
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    n_train: tuple[int, ...]  # training-set sizes; nested prefixes of the toy pool (spec section 2)
    seeds: tuple[int, ...]  # each seed changes both the subset drawn and the initialisation
    dims: tuple[int, ...] = (2,)  # spatial dimensions: 2, 3 or both
    train_preset: str = "cpu"  # the training engine's preset name: "smoke" | "cpu" | "paper"
    # Extra TrainConfig fields for every run, as sorted (key, value) pairs (a dict is not hashable).
    overrides: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        # Normalise so that equal grids given in another order or as lists hash the same.
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "n_train", tuple(sorted(self.n_train, reverse=True)))
        object.__setattr__(self, "seeds", tuple(sorted(self.seeds)))
        object.__setattr__(self, "dims", tuple(sorted(self.dims)))
        ov = self.overrides.items() if isinstance(self.overrides, Mapping) else self.overrides
        object.__setattr__(self, "overrides", tuple(sorted((str(k), _freeze(v)) for k, v in ov)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = dict(self.overrides)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyDefinition:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise StudyError(f"unknown study field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: (dict(v) if k == "overrides" else tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @property
    def hash(self) -> str:
        """Hash of the whole definition (grid and protocol)."""
        return stable_hash({"schema": SCHEMA_VERSION, "definition": self.to_dict()}, 16)

    def protocol(self) -> dict[str, Any]:
        """The fields that change what a run computes (:data:`PROTOCOL_KEYS`); the grid axes only say
        which runs exist, so a study folder may grow its grid but never change its protocol."""
        d = self.to_dict()
        return {k: d[k] for k in PROTOCOL_KEYS}

    @property
    def protocol_hash(self) -> str:
        """A study folder's identity: runs of the same protocol are interchangeable across grids."""
        return stable_hash({"schema": SCHEMA_VERSION, "protocol": self.protocol()}, 16)

    def union(self, other: StudyDefinition) -> StudyDefinition:
        """This grid grown by ``other``'s values on every axis (same protocol; name kept)."""
        if self.protocol() != other.protocol():
            raise StudyError("cannot merge studies of different protocols (training preset / overrides)")
        merged = {k: tuple(dict.fromkeys((*getattr(self, k), *getattr(other, k)))) for k in GRID_AXES}
        return self.replace(**merged)

    def added_by(self, other: StudyDefinition) -> dict[str, list[Any]]:
        """The grid values ``other`` has and this definition lacks, per axis (empty: nothing new)."""
        return {k: [v for v in getattr(other, k) if v not in getattr(self, k)] for k in GRID_AXES
                if any(v not in getattr(self, k) for v in getattr(other, k))}

    def replace(self, **changes: Any) -> StudyDefinition:
        return dataclasses.replace(self, **changes)

    def runs(self) -> list[RunSpec]:
        """All runs, seed-major (then dimension, largest training size first, task, model)."""
        return [
            RunSpec(task, dim, model, n, seed, self.train_preset, self.overrides)
            for seed, dim, n, task, model in itertools.product(self.seeds, self.dims, self.n_train, self.tasks, self.models)
        ]

    def validate(
        self,
        known_tasks: Iterable[str] | None = None,
        known_models: Iterable[str] | None = None,
        pool_size: int | None = DEFAULT_POOL_SIZE,
        known_presets: Iterable[str] | None = None,
    ) -> None:
        """Raise :class:`StudyError` listing every problem at once, or return quietly.

        The known names default to the packages that own them (``toy_data.TASKS``,
        ``retina_unet.models.MODEL_NAMES``, ``retina_unet.training.PRESETS``). ``pool_size=None`` skips
        the pool check (the runner then checks each resolved config).
        """
        if known_tasks is None or known_models is None or known_presets is None:
            known_tasks, known_models, known_presets = _catalogue_names(known_tasks, known_models, known_presets)
        problems: list[str] = []
        known_tasks, known_models, known_presets = list(known_tasks), list(known_models), list(known_presets)
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            problems.append(f"name {self.name!r}: use letters, digits, '-', '_' or '.'")
        for what, values in (("tasks", self.tasks), ("models", self.models), ("n_train", self.n_train),
                             ("seeds", self.seeds), ("dims", self.dims)):
            if not values:
                problems.append(f"{what}: empty; give at least one")
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                problems.append(f"{what}: duplicates {dup}")
        bad = [t for t in self.tasks if t not in known_tasks]
        if bad:
            problems.append(f"unknown task(s) {bad}; known tasks: {known_tasks}")
        bad = [m for m in self.models if m not in known_models]
        if bad:
            problems.append(f"unknown model(s) {bad}; known models: {known_models}")
        bad = [d for d in self.dims if d not in (2, 3)]
        if bad:
            problems.append(f"dims {bad}: only 2 and 3 exist")
        bad = [n for n in self.n_train if not isinstance(n, int) or isinstance(n, bool) or n < 1]
        if bad:
            problems.append(f"n_train {bad}: training sizes must be positive integers")
        too_big = [n for n in self.n_train if pool_size is not None and isinstance(n, int) and n > pool_size]
        if too_big:
            problems.append(f"n_train {too_big} larger than the training pool ({pool_size} images); "
                            f"the largest possible training size is {pool_size}")
        bad = [s for s in self.seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
        if bad:
            problems.append(f"seeds {bad}: seeds must be non-negative integers")
        if self.train_preset not in known_presets:
            problems.append(f"unknown training preset {self.train_preset!r}; known: {known_presets}")
        clash = [k for k, _ in self.overrides if k in GRID_KEYS]
        if clash:
            problems.append(f"overrides {clash} are grid axes; set them through the grid, not as overrides")
        if problems:
            raise StudyError(f"study {self.name!r} is invalid:\n  - " + "\n  - ".join(problems))


# Presets: the one place their names and grids live (the CLI, the Makefile's PRESET and the README
# read them from here). Costs: see STUDY_PRESET_NOTES and retina_unet/study/README.md.
_PAPER_TASKS = ("donuts_shape", "donuts_pattern", "circles_scale")
_PAPER_MODELS = ("retina_net", "retina_unet", "mask_rcnn", "faster_rcnn_plus", "ufrcnn_plus", "detunet")
# The fast path of a cpu run (docs/speed.md, each lever measured): validation on 25 images from epoch 9
# on (the kept epochs are late ones), the best epoch only (the top-3 WBC ensemble triples test
# inference), the first 250 test images (their sampling error next to the seed-to-seed spread: the
# same page), bfloat16 autocast where the CPU computes it natively (float32 elsewhere; each result
# says which). Model-side levers (channels-last, the two-stage RoI budget) are in the cpu preset itself.
_FAST_PATH = {"val_from_epoch": 9, "val_subset": 25, "ensemble_top_k": False, "test_subset": 250,
              "cpu_bf16": True}
# `make study` within an hour on 2 cores: the fast path on a training schedule cut to 8 epochs x 30
# batches (240 steps of 16 patches, 30% of the cpu preset's 800), validated from epoch 5. The models
# are not trained to convergence on it (docs/speed.md, "quick schedule"): the quick report compares
# models at equal, small compute, which favours the models that learn fastest; `standard` keeps the
# full cpu schedule.
_QUICK = {**_FAST_PATH, "epochs": 8, "batches_per_epoch": 30, "val_from_epoch": 5}

PRESETS: dict[str, StudyDefinition] = {
    # CI: the cheapest sweep that exercises every moving part (two models, two sizes, one seed).
    "smoke": StudyDefinition(
        name="smoke", tasks=("donuts_shape",), models=("retina_net", "retina_unet"), n_train=(32, 8),
        seeds=(0,), dims=(2,), train_preset="smoke",
    ),
    # `make study`: the paper's question on all three tasks -- Retina U-Net against Retina Net, Mask
    # R-CNN and the U-Net baseline -- at three sizes, three seeds (108 runs). Faster R-CNN+ and U-FRCNN+
    # (needed for the mask-loss and U-FRCNN+ claims) are left out: they do not fit the 60-minute bar
    # on 2 cores (see STUDY_PRESET_NOTES); add them with `--models ...` to grow the folder.
    "quick": StudyDefinition(
        name="quick", tasks=_PAPER_TASKS, models=("retina_unet", "retina_net", "mask_rcnn", "detunet"),
        n_train=(1000, 100, 20), seeds=(0, 1, 2), dims=(2,), train_preset="cpu", overrides=_QUICK,
    ),
    # Hours on a CPU machine, resumable, shards over a Ray cluster (`--backend ray`): every model, six
    # sizes plus 10 (to see where the models without segmentation supervision collapse), five seeds.
    "standard": StudyDefinition(
        name="standard", tasks=_PAPER_TASKS, models=_PAPER_MODELS, n_train=(1000, 500, 200, 100, 50, 20, 10),
        seeds=(0, 1, 2, 3, 4), dims=(2,), train_preset="cpu", overrides=_FAST_PATH,
    ),
    # The full protocol (spec section 2): GPU hours.
    "paper": StudyDefinition(
        name="paper", tasks=_PAPER_TASKS, models=_PAPER_MODELS, n_train=(1000, 500, 200, 100, 50, 20),
        seeds=(0, 1, 2, 3, 4), dims=(2,), train_preset="paper",
    ),
}
PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "quick"  # `make study` and `study run` without --preset on a new folder

# Cost of each preset (1 torch thread per run, 2 workers on 2 cores; docs/speed.md): a full-schedule
# cpu run with the fast path costs ~100 (Retina Net) to ~240 (Mask R-CNN) CPU-s, a quick run ~40-75.
STUDY_PRESET_NOTES = {
    "smoke": "4 runs; seconds; CI",
    "quick": "108 runs on a 240-step schedule (models not converged: docs/speed.md); ~58 CPU-s per run in "
             "float32 -> under an hour on 2 cores, ~21 CPU-s with native bfloat16 -> 20 min (README: measured); "
             "Faster R-CNN+ and U-FRCNN+ would add ~40%",
    "standard": "630 runs, full cpu schedule; ~1,050 CPU-s per (task, size, seed) -> ~31 CPU-hours (~15 h on "
                "2 cores); resumable, shard it with --backend ray",
    "paper": "540 paper-preset runs; GPU hours",
}


def preset(name: str, **changes: Any) -> StudyDefinition:
    """A study preset, optionally with fields replaced (``preset("quick", seeds=(0, 1))``)."""
    if name not in PRESETS:
        raise StudyError(f"unknown study preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


def _catalogue_names(tasks, models, presets) -> tuple[list[str], list[str], list[str]]:
    """The given names, or the owners' lists where None (one place per fact)."""
    import toy_data
    from retina_unet.models import MODEL_NAMES
    from retina_unet.training import PRESETS

    return (list(toy_data.TASKS if tasks is None else tasks), list(MODEL_NAMES if models is None else models),
            list(PRESETS if presets is None else presets))
