"""Box conventions that ``predict`` can write, as converters from (and back to) ours.

Ours: ``(lo_0, ..., lo_{D-1}, hi_0, ..., hi_{D-1})`` in array-axis order, continuous coordinates,
no "+1" (:mod:`retina_unet.ops.boxes`). The others:

============  =====  ===================================================================
name          dims   columns (per box)
============  =====  ===================================================================
``ours``      2, 3   lo_0, lo_1[, lo_2], hi_0, hi_1[, hi_2]
``xyxy``      2, 3   x1, y1[, z1], x2, y2[, z2]   corners
``xywh``      2, 3   x, y[, z], w, h[, d]         low corner + size (COCO in 2D)
``cxcywh``    2, 3   cx, cy[, cz], w, h[, d]      centre + size
``torchvision`` 2    x1, y1, x2, y2               = ``xyxy`` in 2D (``ops.to_torchvision``)
``monai``     2, 3   MONAI corner mode ``xyxy`` / ``xyzxyz`` (``ops.to_monai``)
``mdt``       2, 3   y1, x1, y2, x2[, z1, z2]     medicaldetectiontoolkit order (``ops.to_mdt``)
============  =====  ===================================================================

In ``xyxy`` / ``xywh`` / ``cxcywh`` x, y[, z] name the spatial axes in *reverse* array order, as
torchvision and COCO do for an ``(H, W)`` image: x = the last axis (columns), y = the one before
(rows), z = axis 0 of a ``(D, H, W)`` volume (slices). MONAI counts its x, y, z in array order
(its x = axis 0), so its mode named "xyxy" is *our* layout: ask for ``monai`` for that. The
medicaldetectiontoolkit used y = axis 0, x = axis 1, z = axis 2 and inclusive "+1" extents, which
are not added here. Every converter works on ``Tensor[N, 2*D]`` and returns a new float64 tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from retina_unet.ops import from_mdt, from_monai, from_torchvision, to_mdt, to_monai, to_torchvision


@dataclass(frozen=True)
class Convention:
    """One box convention: its columns per dimensionality and the converters from / to ours."""

    name: str
    doc: str
    columns: dict[int, tuple[str, ...]]  # spatial dims -> column names
    to: Callable[[torch.Tensor], torch.Tensor]
    back: Callable[[torch.Tensor], torch.Tensor]

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(sorted(self.columns))


def _reverse(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) with the spatial axes reversed (x = last array axis first)."""
    d = boxes.shape[1] // 2
    return boxes[:, :d].flip(1), boxes[:, d:].flip(1)


def _xyxy(b: torch.Tensor) -> torch.Tensor:
    lo, hi = _reverse(b)
    return torch.cat([lo, hi], 1)


def _xywh(b: torch.Tensor) -> torch.Tensor:
    lo, hi = _reverse(b)
    return torch.cat([lo, hi - lo], 1)


def _cxcywh(b: torch.Tensor) -> torch.Tensor:
    lo, hi = _reverse(b)
    return torch.cat([(lo + hi) / 2, hi - lo], 1)


def _from_xyxy(c: torch.Tensor) -> torch.Tensor:
    d = c.shape[1] // 2
    return torch.cat([c[:, :d].flip(1), c[:, d:].flip(1)], 1)


def _from_xywh(c: torch.Tensor) -> torch.Tensor:
    d = c.shape[1] // 2
    lo, size = c[:, :d].flip(1), c[:, d:].flip(1)
    return torch.cat([lo, lo + size], 1)


def _from_cxcywh(c: torch.Tensor) -> torch.Tensor:
    d = c.shape[1] // 2
    centre, size = c[:, :d].flip(1), c[:, d:].flip(1)
    return torch.cat([centre - size / 2, centre + size / 2], 1)


def _names(*per_dim: str) -> dict[int, tuple[str, ...]]:
    return {2 + i: tuple(s.split()) for i, s in enumerate(per_dim)}


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention(
            "ours",
            "(lo_0.., hi_0..) in array-axis order (no conversion)",
            _names("lo_0 lo_1 hi_0 hi_1", "lo_0 lo_1 lo_2 hi_0 hi_1 hi_2"),
            torch.Tensor.clone,
            torch.Tensor.clone,
        ),
        Convention(
            "xyxy",
            "corners, x = last array axis (torchvision in 2D)",
            _names("x1 y1 x2 y2", "x1 y1 z1 x2 y2 z2"),
            _xyxy,
            _from_xyxy,
        ),
        Convention(
            "xywh",
            "low corner + size, x = last array axis (COCO in 2D)",
            _names("x y w h", "x y z w h d"),
            _xywh,
            _from_xywh,
        ),
        Convention(
            "cxcywh",
            "centre + size, x = last array axis",
            _names("cx cy w h", "cx cy cz w h d"),
            _cxcywh,
            _from_cxcywh,
        ),
        Convention(
            "torchvision",
            "torchvision (x1, y1, x2, y2), x = columns; 2D only",
            _names("x1 y1 x2 y2"),
            to_torchvision,
            from_torchvision,
        ),
        Convention(
            "monai",
            "MONAI corner mode xyxy / xyzxyz (MONAI's x = array axis 0)",
            _names("x1 y1 x2 y2", "x1 y1 z1 x2 y2 z2"),
            to_monai,
            from_monai,
        ),
        Convention(
            "mdt",
            "medicaldetectiontoolkit (y1, x1, y2, x2[, z1, z2]), no +1",
            _names("y1 x1 y2 x2", "y1 x1 y2 x2 z1 z2"),
            to_mdt,
            from_mdt,
        ),
    )
}


def get_convention(name: str, spatial_dims: int | None = None) -> Convention:
    """The convention called ``name``; with ``spatial_dims``, also check it supports that many dims.

    Raises:
        ValueError: unknown name (the message lists the known ones) or a 2D-only convention for 3D.
    """
    if name not in CONVENTIONS:
        known = ", ".join(f"{k} ({c.doc})" for k, c in CONVENTIONS.items())
        raise ValueError(f"--convention: unknown box convention {name!r}; expected one of: {known}")
    conv = CONVENTIONS[name]
    if spatial_dims is not None and spatial_dims not in conv.columns:
        others = ", ".join(k for k, c in CONVENTIONS.items() if spatial_dims in c.columns)
        raise ValueError(
            f"--convention: {name!r} is defined for {'/'.join(map(str, conv.dims))}D boxes only, but the "
            f"checkpoint's model is {spatial_dims}D; use one of: {others}"
        )
    return conv


def _check(boxes: torch.Tensor, conv: Convention, what: str) -> int:
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] not in (4, 6):
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{what}: boxes must be a tensor of shape (N, 4) or (N, 6), got {shape}")
    d = boxes.shape[1] // 2
    if d not in conv.columns:
        raise ValueError(f"{what}: convention {conv.name!r} has no {d}D form")
    return d


def convert_boxes(boxes: torch.Tensor, name: str) -> torch.Tensor:
    """Ours ``Tensor[N, 2*D]`` -> convention ``name``, ``Tensor[N, 2*D]`` float64."""
    conv = get_convention(name)
    _check(boxes, conv, f"convert_boxes({name!r})")
    return conv.to(boxes.to(torch.float64))


def boxes_from_convention(boxes: torch.Tensor, name: str) -> torch.Tensor:
    """Convention ``name`` ``Tensor[N, 2*D]`` -> ours, float64 (the inverse of :func:`convert_boxes`)."""
    conv = get_convention(name)
    _check(boxes, conv, f"boxes_from_convention({name!r})")
    return conv.back(boxes.to(torch.float64))
