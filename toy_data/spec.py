"""Task specifications: the three Retina U-Net toy tasks (2D as in the paper, plus 3D counterparts).

A :class:`TaskSpec` is a frozen, validated description of one task; :func:`task_spec` builds the
default spec of a named task in 2D or 3D and applies overrides. Semantics (binding, see
``docs/conventions.md`` "The toy tasks"):

- background i.i.d. uniform [0, 1) (or 0 with ``noise=False``); object pixels get ``+contrast``;
  hole pixels get nothing (the hole is exactly background);
- pixel p is inside an object of radius R centred at c when ``|p - c|^2 < R^2`` (strict);
- centres are integers, uniform in ``[margin, size - margin)`` per axis, so objects may be clipped
  by the border by up to ``radius - margin`` pixels;
- the class is uniform over {1, 2} per object; ``donuts_*``: class 2 has a centred hole;
  ``circles_scale``: class 1 has radius ``radii[0]``, class 2 ``radii[1]``;
- ``donuts_shape`` cuts the hole out of the mask, the other tasks' masks are full discs/balls.

3D defaults (64^3 volume; ball radius 10, hole 2, margin 5; circles_scale radii 9 vs 10): the
radius, hole and margin are the 2D ones halved, which keeps the hole/radius ratio (0.2) and the
clipping (up to half a radius) of the paper, and puts a similar share of the image in the object
(a radius-10 ball is 1.6 % of the voxels, a radius-20 disc 1.2 % of the pixels). 64^3 is 2.6x the
pixels of a 320^2 image, which still trains on a CPU; 96^3 (8.6x) would not. circles_scale keeps
the one-pixel radius step, so the two classes' boxes differ by 2 voxels as in 2D (17 vs 19, 2D
37 vs 39). See ``toy_data/README.md`` for the numbers and what is not matched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

TASKS: tuple[str, ...] = ("donuts_shape", "donuts_pattern", "circles_scale")

# Defaults per dimension: shape, radius (class 1 and 2 for donuts), hole, margin, circles radii.
_DEFAULTS = {
    2: dict(size=320, radius=20.0, hole=4.0, margin=10, scale_radii=(19.0, 20.0)),
    3: dict(size=64, radius=10.0, hole=2.0, margin=5, scale_radii=(9.0, 10.0)),
}


@dataclass(frozen=True)
class TaskSpec:
    """One toy task. Every field is validated on construction (``ValueError`` says what and why).

    Attributes:
        task: one of :data:`TASKS`.
        shape: image size per array axis; 2 axes (2D) or 3 (3D).
        radii: object radius of class 1 and of class 2 (pixels; strict disc test ``d^2 < r^2``).
        hole_radius: radius of the centred hole of class-2 objects (donuts tasks); 0 = no hole.
        contrast: intensity added to object pixels (the paper's 0.2 against noise std 0.289).
        margin: object centres are uniform integers in ``[margin, size - margin)`` per axis.
        noise: background i.i.d. uniform [0, 1) when True, exactly 0 when False.
        objects_per_image: K >= 1 objects, each with its own class, placed without overlap.
        gap: minimum free distance between two objects' discs when K > 1 (2 keeps masks of
            different objects from touching, even diagonally).
    """

    task: str
    shape: tuple[int, ...]
    radii: tuple[float, float]
    hole_radius: float = 0.0
    contrast: float = 0.2
    margin: int = 10
    noise: bool = True
    objects_per_image: int = 1
    gap: float = 2.0

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the spec stays hashable.
        object.__setattr__(self, "shape", tuple(self.shape) if _is_seq(self.shape) else self.shape)
        object.__setattr__(self, "radii", tuple(self.radii) if _is_seq(self.radii) else self.radii)
        _validate(self)

    @property
    def dim(self) -> int:
        """Number of spatial dimensions D (2 or 3)."""
        return len(self.shape)

    @property
    def intensity_range(self) -> tuple[float, float]:
        """(lowest, highest) pixel value the generator can write: background in [0, 1) (0 without
        noise), object pixels + ``contrast``; so every image lies in [0, 1 + contrast]."""
        return 0.0, (1.0 if self.noise else 0.0) + self.contrast

    @property
    def mask_has_hole(self) -> bool:
        """True when the hole is cut out of the segmentation mask (``donuts_shape``)."""
        return self.task == "donuts_shape" and self.hole_radius > 0

    @property
    def min_centre_distance(self) -> float:
        """Centres of two objects in one image are at least this far apart (K > 1)."""
        return 2.0 * max(self.radii) + self.gap

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``TaskSpec.from_dict(spec.to_dict()) == spec``."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["radii"] = list(self.radii)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown task spec field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)


def task_spec(name: str, dim: int = 2, **overrides: Any) -> TaskSpec:
    """The default spec of task ``name`` in ``dim`` D, with fields replaced by ``overrides``.

    ``size=`` (an int or one int per axis) is accepted as a shortcut for ``shape=``.

    >>> task_spec("circles_scale").radii
    (19.0, 20.0)
    >>> task_spec("donuts_shape", dim=3, size=96).shape
    (96, 96, 96)
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    if dim not in _DEFAULTS:
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    d = _DEFAULTS[dim]
    if name == "circles_scale":
        radii, hole = d["scale_radii"], 0.0
    else:
        radii, hole = (d["radius"], d["radius"]), d["hole"]
    spec = dict(task=name, shape=(d["size"],) * dim, radii=radii, hole_radius=hole, margin=d["margin"])
    if "size" in overrides:
        if "shape" in overrides:
            raise ValueError("give either size= or shape=, not both")
        size = overrides.pop("size")
        overrides["shape"] = (size,) * dim if isinstance(size, int) else tuple(size)
    known = {f.name for f in fields(TaskSpec)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; overridable fields: {sorted(known - {'task'})}")
    if "task" in overrides and overrides["task"] != name:
        raise ValueError(f"task={overrides['task']!r} contradicts name={name!r}")
    return TaskSpec(**{**spec, **overrides})


def with_overrides(spec: TaskSpec, **overrides: Any) -> TaskSpec:
    """``spec`` with some fields replaced (validated again)."""
    return replace(spec, **overrides)


def grid_capacity(spec: TaskSpec) -> int:
    """How many objects a regular grid of allowed centres holds at ``min_centre_distance`` spacing.

    Validation admits ``objects_per_image`` up to this number, which guarantees that a placement
    without overlap exists (the generator falls back to a jittered grid when random placement jams).
    """
    step = math.ceil(spec.min_centre_distance)
    n = 1
    for size in spec.shape:
        n *= (size - 2 * spec.margin - 1) // step + 1
    return n


def _is_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ring_has_pixels(outer: float, inner: float, dim: int) -> bool:
    """Whether some lattice offset p satisfies inner^2 <= |p|^2 < outer^2."""
    r = math.ceil(outer)
    if dim == 2:
        sq = [i * i + j * j for i in range(r) for j in range(r)]
    else:
        sq = [i * i + j * j + k * k for i in range(r) for j in range(r) for k in range(r)]
    return any(inner * inner <= s < outer * outer for s in sq)


def _validate(s: TaskSpec) -> None:
    def bad(msg: str) -> ValueError:
        return ValueError(f"invalid {s.task if isinstance(s.task, str) else '?'} task spec: {msg}")

    if s.task not in TASKS:
        raise ValueError(f"unknown task {s.task!r}: expected one of {', '.join(TASKS)}")
    if not _is_seq(s.shape) or len(s.shape) not in (2, 3):
        raise bad(f"shape must list 2 (2D) or 3 (3D) axis sizes, got {s.shape!r}")
    if not all(_is_int(n) and n > 0 for n in s.shape):
        raise bad(f"image sizes must be positive integers, got shape={s.shape!r}")
    if not _is_seq(s.radii) or len(s.radii) != 2 or not all(_is_real(r) and r > 0 for r in s.radii):
        raise bad(f"radii must be two positive numbers (class 1, class 2), got {s.radii!r}")
    object.__setattr__(s, "radii", tuple(float(r) for r in s.radii))
    if not _is_real(s.hole_radius) or s.hole_radius < 0:
        raise bad(f"hole_radius must be a number >= 0, got {s.hole_radius!r}")
    object.__setattr__(s, "hole_radius", float(s.hole_radius))
    if not _is_real(s.contrast) or s.contrast <= 0:
        raise bad(
            f"contrast must be a positive number (objects brighter than background), got {s.contrast!r}"
        )
    object.__setattr__(s, "contrast", float(s.contrast))
    if not _is_int(s.margin) or s.margin < 0:
        raise bad(f"margin must be an integer >= 0, got {s.margin!r}")
    if not isinstance(s.noise, bool):
        raise bad(f"noise must be True or False, got {s.noise!r}")
    if not _is_int(s.objects_per_image) or s.objects_per_image < 1:
        raise bad(f"objects_per_image must be an integer >= 1, got {s.objects_per_image!r}")
    if not _is_real(s.gap) or s.gap < 0:
        raise bad(f"gap must be a number >= 0, got {s.gap!r}")
    object.__setattr__(s, "gap", float(s.gap))

    # Task semantics.
    r1, r2 = s.radii
    if s.task == "circles_scale":
        if r1 == r2:
            raise bad(
                f"circles_scale tells the classes apart by radius only, so radii must differ; got {s.radii}"
            )
        if s.hole_radius != 0:
            raise bad(f"circles_scale objects have no hole; got hole_radius={s.hole_radius}")
    else:
        if r1 != r2:
            raise bad(
                f"{s.task} uses the same disc for both classes (only the hole tells them apart); got radii={s.radii}"
            )
        if not 0 < s.hole_radius < r2:
            raise bad(f"the hole must satisfy 0 < hole_radius < radius={r2}; got hole_radius={s.hole_radius}")
        if not _ring_has_pixels(r2, s.hole_radius, s.dim):
            raise bad(
                f"a disc of radius {r2} with a hole of radius {s.hole_radius} has no pixels left "
                "(no lattice point between the two radii)"
            )

    # Fit: centres need room, and an object must fit in the image somewhere.
    for axis, size in enumerate(s.shape):
        if size - 2 * s.margin < 1:
            raise bad(
                f"margin={s.margin} leaves no room for object centres on axis {axis} of size {size} "
                f"(centres are drawn from [margin, size - margin); need size > 2 * margin)"
            )
        for r in s.radii:
            extent = 2 * math.ceil(r) - 1  # pixels with |offset| < r on one axis
            if extent > size:
                raise bad(
                    f"an object of radius {r} spans {extent} pixels, more than axis {axis}'s size {size}"
                )
    if s.objects_per_image > 1:
        cap = grid_capacity(s)
        if s.objects_per_image > cap:
            raise bad(
                f"objects_per_image={s.objects_per_image} cannot be placed without overlap: centres must be "
                f">= {s.min_centre_distance:g} apart (2 x radius {max(s.radii):g} + gap {s.gap:g}) within "
                f"{tuple(n - 2 * s.margin for n in s.shape)} allowed centre positions, which guarantees room "
                f"for at most {cap}"
            )
