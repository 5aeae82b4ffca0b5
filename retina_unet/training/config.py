"""Training configuration: one frozen dataclass with documented defaults, and named presets.

An experiment overrides only what differs: ``preset("cpu", 2, model="retina_net", seed=3)``.
``TrainConfig.from_dict(asdict(cfg)) == cfg`` (checkpoints and results carry the resolved config).

Field roles (dataclass metadata ``{"roles": frozenset(...)}``, read with :func:`fields_with_role`):

- ``"resume_may_change"``: may differ when a run is resumed (the training engine's resume check);
- ``"inference"``: changes only test-time predictions of fixed weights; stored predictions are
  reused when these are unchanged (``retina_unet.rundir``);
- ``"not_identity"``: says where / how a run executes, not what it computes; left out of a run's
  identity (:func:`identity_dict`, the study's run hash).

A field added after runs were first recorded carries ``metadata["added"]`` (the date it was added)
and is left out of :func:`identity_dict` while it has its default value: runs recorded before it
existed computed exactly the default, so their identity (and every finished study) stays valid;
only a non-default value makes a new identity. ``docs/conventions.md`` ("Run identity") says more.

Overrides given as text (``train --set``, ``evaluate --set``, ``study run --set``) go through the
one parser, :func:`parse_overrides`, which checks each value against the field's type.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, get_type_hints

OPTIMIZERS = ("adam", "adamw", "sgd")
ROLES = ("resume_may_change", "inference", "not_identity")


def _role(default: Any, *roles: str, added: str | None = None) -> Any:
    """A dataclass field with ``roles`` (see the module docstring) and, for fields added after runs
    were first recorded, ``added`` (ISO date)."""
    meta: dict[str, Any] = {"roles": frozenset(roles)}
    if added is not None:
        meta["added"] = added
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one training run (and its test-time inference).

    Defaults are the paper's / MDT's toy settings (``preset("paper", 2)``).
    """

    # --- what ---
    model: str = "retina_unet"  # retina_unet.models.MODEL_NAMES
    task: str = "donuts_shape"  # toy_data.TASKS
    spatial_dims: int = 2  # 2 (320^2 images) or 3 (64^3 volumes)
    task_overrides: dict = field(default_factory=dict)  # toy_data.task_spec(**overrides), e.g. {"size": 96}
    model_size: str = "paper"  # retina_unet.models.model_config size: "paper" | "cpu" | "tiny"
    model_overrides: dict = field(default_factory=dict)  # ModelConfig field overrides

    # --- data (protocol section 2) ---
    n_train: int = 1000  # the first n of a seed-specific permutation of the train pool (nested per seed)
    seed: int = 0  # drives the subset drawn, the network initialisation and batch sampling
    data_seed: int = 0  # seed of the generated dataset (fixed across runs: same val/test for every run)
    pool_train: int = 1000  # train pool written to disk (n_train <= pool_train)
    pool_val: int = 500  # validation split written to disk
    pool_test: int = 1000  # held-out test split written to disk
    class_balanced: bool = True  # batches draw classes uniformly (MDT), then an image of that class
    patch_size: tuple | None = None  # train on random crops of this size (None = whole images)
    patch_fg_prob: float = 0.5  # probability a training crop is centred so the object lies inside

    # --- optimisation ---
    optimizer: str = "adam"  # adam (paper) | adamw | sgd (momentum 0.9)
    lr: float = 1e-4  # paper: Adam 1e-4
    weight_decay: float = 0.0
    batch_size: int = 20  # paper: 20 (2D) / 8 (3D)
    epochs: int = 24  # paper toys: 24 epochs ...
    batches_per_epoch: int = 100  # ... of 100 batches
    grad_clip: float | None = None  # max gradient norm (None = off)
    # "constant" (paper) | "cosine": per step, lr decays along a half cosine to lr * lr_min_ratio at
    # the last step. Stateless (a function of the step), so resuming needs no scheduler state.
    lr_schedule: str = "constant"
    lr_min_ratio: float = 0.01
    # "cosine" only: the fraction of the run's steps spent at the full lr before the half cosine
    # starts (0 = decay over the whole run; 0.625 of 64 epochs = a constant lr to epoch 40, then
    # the decay over the last 24; measured on 3D Mask R-CNN without gain, docs/models.md)
    lr_decay_from: float = _role(0.0, added="2026-12-01")
    amp: bool = True  # mixed precision (bfloat16 autocast) when training on CUDA; ignored on CPU
    # bfloat16 autocast on the CPU (training, validation, test inference) where the CPU computes
    # bfloat16 natively (AVX-512 BF16 / AMX); elsewhere the run computes float32. The result file's
    # "precision" says which (retina_unet.environment.autocast_for; docs/speed.md, "The levers").
    cpu_bf16: bool = _role(False, added="2026-12-01")
    device: str = _role("auto", "resume_may_change", "not_identity")  # "auto" (cuda when available) | "cpu" | "cuda" | "cuda:1"
    num_threads: int | None = _role(None, "resume_may_change", "not_identity")  # torch.set_num_threads for the run (None = leave as is)

    # --- validation, checkpoints ---
    val_subset: int | None = None  # validate on the first n val images each epoch (None = all)
    val_batch_size: int = _role(8, "resume_may_change")  # whole images per inference batch
    # Validate (and so consider for the top-k epochs) only from this epoch on; the last epoch is
    # always validated. 1 = every epoch (paper). Later epochs are the ones kept in practice (the
    # cpu-preset curves: docs/training.md, "cheaper validation").
    val_from_epoch: int = _role(1, added="2026-11-30")
    top_k: int = 5  # keep the k epochs with the best validation mAP (paper: top-5)

    # --- test-time inference (protocol section 3) ---
    tta: bool = _role(True, "inference", "resume_may_change")  # mirroring test-time augmentation (4 views)
    tta_views: int = _role(4, "inference", "resume_may_change")  # mirror views used with tta
    ensemble_top_k: bool = _role(True, "inference", "resume_may_change")  # ensemble the kept top-k epochs (False: the best epoch only)
    merge: str = _role("wbc", "inference", "resume_may_change")  # "wbc" | "nms" | "none"
    wbc_iou: float = _role(1e-5, "inference", "resume_may_change")  # MDT toy config
    nms_iou: float = _role(0.1, "inference", "resume_may_change")  # for merge="nms"
    test_subset: int | None = _role(None, "resume_may_change")  # evaluate on the first n test images (None = all 1000)
    iou_threshold: float = 0.1  # evaluation: match needs IoU > this
    score_threshold: float = 0.1  # evaluation: predictions <= this dropped

    def __post_init__(self) -> None:
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "task_overrides", dict(self.task_overrides))
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["patch_size"] is not None:
            d["patch_size"] = list(d["patch_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**d)

    def replace(self, **overrides: Any) -> TrainConfig:
        return replace(self, **overrides)


def fields_with_role(config_or_cls: Any, role: str) -> tuple[str, ...]:
    """Names of the fields of a config dataclass (instance or class) that carry ``role``."""
    if role not in ROLES:
        raise ValueError(f"role: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return tuple(f.name for f in fields(config_or_cls) if role in f.metadata.get("roles", ()))


def identity_dict(config: dict[str, Any], cls: type = None) -> dict[str, Any]:  # type: ignore[assignment]
    """A run's identity from its config dict: without ``not_identity`` fields, and without fields
    added later (``metadata["added"]``) while they hold their default (module docstring).

    Keys that are not fields of ``cls`` (default :class:`TrainConfig`) are kept as they are.
    """
    cls = TrainConfig if cls is None else cls
    drop = set(fields_with_role(cls, "not_identity"))
    for f in fields(cls):
        if "added" in f.metadata and f.name in config:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if _canonical(config[f.name]) == _canonical(default):
                drop.add(f.name)
    return {k: v for k, v in config.items() if k not in drop}


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(c: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based, over all epochs) under ``c.lr_schedule``."""
    if c.lr_schedule == "constant":
        return c.lr
    total = max(c.epochs * c.batches_per_epoch - 1, 1)
    start = c.lr_decay_from * total
    frac = min(max((step - start) / (total - start), 0.0), 1.0)  # total - start > 0: decay_from < 1
    return c.lr * (c.lr_min_ratio + (1.0 - c.lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _validate(c: TrainConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"invalid TrainConfig: {msg}")

    need(c.spatial_dims in (2, 3), f"spatial_dims must be 2 or 3, got {c.spatial_dims!r}")
    need(
        isinstance(c.n_train, int) and c.n_train >= 1,
        f"n_train must be >= 1 (empty training set), got {c.n_train!r}",
    )
    need(c.n_train <= c.pool_train, f"n_train={c.n_train} is larger than the train pool ({c.pool_train})")
    for name in ("batch_size", "epochs", "batches_per_epoch", "val_batch_size", "top_k", "tta_views",
                 "val_from_epoch"):
        need(isinstance(getattr(c, name), int) and getattr(c, name) >= 1, f"{name} must be an int >= 1")
    need(c.lr > 0, f"lr must be > 0, got {c.lr}")
    need(c.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {c.lr_schedule!r}")
    need(0.0 <= c.lr_min_ratio <= 1.0, f"lr_min_ratio must be in [0, 1], got {c.lr_min_ratio}")
    need(0.0 <= c.lr_decay_from < 1.0, f"lr_decay_from must be in [0, 1), got {c.lr_decay_from}")
    need(c.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    need(c.merge in ("wbc", "nms", "none"), f"merge must be wbc, nms or none, got {c.merge!r}")
    need(0.0 <= c.patch_fg_prob <= 1.0, f"patch_fg_prob must be in [0, 1], got {c.patch_fg_prob}")
    if c.patch_size is not None:
        need(len(c.patch_size) == c.spatial_dims, f"patch_size {c.patch_size} has not {c.spatial_dims} axes")
        need(all(p > 0 for p in c.patch_size), f"patch_size must be positive, got {c.patch_size}")


# --- presets ------------------------------------------------------------------------------------
PRESETS = ("paper", "cpu", "smoke")


def preset(name: str, spatial_dims: int = 2, **overrides: Any) -> TrainConfig:
    """A named configuration, with fields replaced by ``overrides``.

    - ``paper``: the published settings (MDT toys): full-size models, Adam 1e-4, batch 20 (2D) /
      8 (3D), 24 epochs x 100 batches, whole images, 4 mirrorings x top-5 epochs merged by WBC.
      Meant for a GPU.
    - ``cpu``: trains on a 2-core CPU in minutes: the "cpu" model size, 64^2 (2D) / 32^3 (3D)
      training patches containing the object with probability 0.9, Adam with lr 1e-3 (1e-4 is
      too slow for the small networks in this budget; 3e-3 diverged early), 16 epochs x 50
      batches of 16 (2D) / 8 (3D), validation on 50 images. A patch is about 1.6 object
      diameters a side in both dimensions, so the object fills a similar share of it (30 % in 2D,
      13 % in 3D); 48^3 patches (3.7 %, padded to 64^3) did not learn (docs/models.md, "3D learning"). Test time (full images, all 1000):
      the top-3 epochs merged by WBC, no TTA (each mirroring multiplies the test cost on a CPU).
      3D: 64 epochs x 50 batches of 8, validation on 25 volumes from epoch 52, bfloat16 where the
      CPU computes it natively (``cpu_bf16``), and the test with the 4 mirrorings (``tta``).
      Retina U-Net 2D on donuts_shape, n_train=1000, seed 0, on the 2-core CPU: test mAP 0.959
      (batches of 8 gave 0.892; a cosine lr decay with batches of 8 gave 0.819), 4.2 min wall,
      of which the test-time inference is over half. ``tta=True`` adds the 4 mirrorings. These
      figures predate the MDT-fidelity model changes of issue #12 (docs/models.md).
    - ``smoke``: seconds; a tiny model, tiny images (64^2 / 24^3), 2 epochs x 2 batches. For CI and
      the study's smoke preset: checks the plumbing, not the science.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if name == "paper":
        base: dict[str, Any] = dict(model_size="paper", batch_size=20 if spatial_dims == 2 else 8)
    elif name == "cpu":
        base = dict(
            model_size="cpu",
            lr=1e-3,
            # 3D: 32^3 patches, like 2D's 64^2 about 1.6 object diameters a side (docs/models.md,
            # "3D learning"), and 8 of them: 48^3 patches of 2 (padded to 64^3) did not learn
            batch_size=16 if spatial_dims == 2 else 8,
            epochs=16,
            batches_per_epoch=50,
            patch_size=(64, 64) if spatial_dims == 2 else (32, 32, 32),
            patch_fg_prob=0.9,
            val_subset=50,
            top_k=3,
            tta=False,
            ensemble_top_k=True,
            num_threads=2,
        )
        if spatial_dims == 3:
            # The 3D class (a 27-voxel hole) needs ~3,000 steps with the stride-1 3^3 stem of the 3D cpu
            # model size, at the full lr: a cosine decay over the 64 epochs left Retina Net at test
            # mAP 0.70. bfloat16 where the CPU has it natively, and validation on 25 volumes over the
            # last 13 epochs (from epoch 52; the top-3 epochs of the preset's runs were all >= 57),
            # keep a Retina U-Net run's training under 15 min on 2 cores. The test uses the paper's 4
            # mirrorings: they lifted Mask R-CNN from 0.757-0.827 to 0.807-0.898 (seeds 0-2), and cost
            # Retina U-Net 2.4 min per 100 test volumes on 2 cores (docs/models.md, "The 3D cpu preset").
            base.update(epochs=64, val_from_epoch=52, val_subset=25, cpu_bf16=True, tta=True)
    elif name == "smoke":
        base = dict(
            model_size="tiny",
            task_overrides={"size": 64} if spatial_dims == 2 else {"size": 24},
            n_train=16,
            pool_train=32,
            pool_val=8,
            pool_test=8,
            lr=1e-3,
            batch_size=2,
            epochs=2,
            batches_per_epoch=2,
            val_batch_size=4,
            top_k=2,
            tta_views=2,
            num_threads=1,
        )
    else:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    base["spatial_dims"] = spatial_dims
    base.update(overrides)
    return TrainConfig(**base)


def parse_overrides(items, cls: type = None) -> dict[str, Any]:  # type: ignore[assignment]
    """``["lr=3e-4", "tta=false", "patch_size=(96,96)"]`` -> ``{"lr": 0.0003, "tta": False, ...}``.

    The one parser for ``train --set``, ``evaluate --set`` and ``study run --set``. Each value is
    read as the type of the field of ``cls`` (default :class:`TrainConfig`) it sets:

    - bool: ``true`` / ``false`` in any case, ``1`` / ``0``;
    - int, float: a number (an int field rejects ``2.5``); str: the text (quotes optional);
    - ``X | None``: ``none`` / ``null`` (any case) or an X;
    - tuple: ``(96,96)``, ``[96,96]`` or ``96,96`` (integers); dict: a JSON or Python dict literal.

    Raises ``ValueError`` with one line naming the setting and the expected type (or, for an
    unknown key, the closest field names).
    """
    cls = TrainConfig if cls is None else cls
    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_override(item, cls)
        out[key] = value
    return out


def parse_override(text: str, cls: type = None) -> tuple[str, Any]:  # type: ignore[assignment]
    """One ``"key=value"`` -> ``(key, value)``; see :func:`parse_overrides`."""
    cls = TrainConfig if cls is None else cls
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. --set lr=3e-4")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
        raise ValueError(f"--set {key}: unknown {cls.__name__} field; {hint}")
    return key, _parse_value(key, raw.strip(), hints[key])


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _parse_value(key: str, raw: str, tp: Any) -> Any:
    args = getattr(tp, "__args__", ())
    if type(None) in args:  # X | None
        if raw.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else tp

    def bad(expected: str) -> ValueError:
        return ValueError(f"--set {key}={raw}: expected {expected}")

    if tp is bool:
        low = raw.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise bad("a bool (true / false / 1 / 0)")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise bad("an int") from None
    if tp is float:
        try:
            value = float(raw)
        except ValueError:
            raise bad("a number (float)") from None
        if not math.isfinite(value):
            raise bad("a finite number (float)")
        return value
    if tp is str:
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            return raw[1:-1]
        return raw
    if tp is tuple:
        text = raw if raw[:1] in "([" else f"({raw},)"
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise bad("a tuple of integers, e.g. (96,96)") from None
        if not isinstance(value, tuple | list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
            raise bad("a tuple of integers, e.g. (96,96)")
        return tuple(value)
    if tp is dict:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                raise bad('a dict, e.g. {"size": 96}') from None
        if not isinstance(value, dict):
            raise bad('a dict, e.g. {"size": 96}')
        return value
    raise bad(f"a value of type {_type_name(tp)}")  # a field type this parser does not know yet
