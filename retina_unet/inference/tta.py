"""Mirroring test-time augmentation: flip images, predict, flip the predictions back.

A *view* is a tuple of spatial axes to mirror (axis k = tensor dim 2 + k of a ``(B, C, *S)``
batch; box columns k and D + k). MDT used 4 mirrorings in 2D: none, axis 0, axis 1, both. In 3D
we default to the same 4 in-plane mirrorings (a subset of the 8 possible; z flips add cost and the
toys are isotropic, so they bring little); :func:`mirror_views` can return all 8.
"""

from __future__ import annotations

import itertools

import torch


def mirror_views(
    spatial_dims: int, max_views: int = 4, axes: tuple[int, ...] | None = None
) -> list[tuple[int, ...]]:
    """The mirror views used for TTA, identity first.

    Args:
        spatial_dims: 2 or 3.
        max_views: at most this many views (1 = no TTA). Views are all subsets of ``axes``
            ordered by size then lexicographically, truncated.
        axes: the axes that may be flipped; default (0, 1) (in-plane), so 4 views in 2D and 3D.

    Returns:
        e.g. ``[(), (0,), (1,), (0, 1)]``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    axes = tuple(range(min(spatial_dims, 2))) if axes is None else tuple(axes)
    if any(a < 0 or a >= spatial_dims for a in axes):
        raise ValueError(f"mirror axes {axes} outside 0..{spatial_dims - 1}")
    views = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    return views[: max(1, max_views)]


def flip_images(images: torch.Tensor, view: tuple[int, ...]) -> torch.Tensor:
    """Mirror a ``(B, C, *S)`` batch along the spatial axes in ``view``."""
    return images.flip([2 + a for a in view]) if view else images


def flip_seg(seg: torch.Tensor, view: tuple[int, ...]) -> torch.Tensor:
    """Mirror a per-image segmentation ``(C+1, *S)`` along the spatial axes in ``view``."""
    return seg.flip([1 + a for a in view]) if view else seg


def flip_boxes(boxes: torch.Tensor, view: tuple[int, ...], spatial_shape) -> torch.Tensor:
    """Mirror boxes ``(N, 2*D)`` in an image of ``spatial_shape``: on axis k, [lo, hi) -> [L-hi, L-lo).

    Flipping twice with the same view is the identity (exactly, for integer-valued coordinates).
    """
    if not view or boxes.numel() == 0:
        return boxes
    d = boxes.shape[1] // 2
    out = boxes.clone()
    for a in view:
        size = float(spatial_shape[a])
        out[:, a] = size - boxes[:, d + a]
        out[:, d + a] = size - boxes[:, a]
    return out
