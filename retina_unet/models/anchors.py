"""Anchors for 2D and 3D feature pyramids (one code path).

Per detection level: a base size (per axis), ``scales_per_octave`` scales ``2**(i/n)`` and aspect
ratios r = extent(axis -2) / extent(axis -1) applied to the two in-plane (last) axes; in 3D axis 0
(slices) is scaled by the scales only, so there are ``n * len(ratios)`` anchors per position in
both dimensions. Anchors are centred on feature cells: centre_k = (i_k + 0.5) * stride_k.
Order: level, then position (row-major over the feature map), then anchor - the order in which
``flatten_head_output`` lays out head outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _per_axis(v: int | float | Sequence, d: int) -> tuple[float, ...]:
    t = (float(v),) * d if isinstance(v, int | float) else tuple(float(x) for x in v)
    if len(t) != d:
        raise ValueError(f"expected a number or {d} numbers, got {v!r}")
    return t


class AnchorGenerator:
    """``anchors(feature_shapes, strides) -> Tensor[A, 2*D]`` for the levels it was built for.

    Args:
        spatial_dims: 2 or 3.
        sizes: base size per level (a number or one per axis), in input pixels.
        scales_per_octave: n scales ``size * 2**(i/n)``, i = 0..n-1.
        ratios: aspect ratios on the last two axes (extent(-2) / extent(-1)).
    """

    def __init__(
        self,
        spatial_dims: int,
        sizes: Sequence,
        scales_per_octave: int = 3,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ) -> None:
        self.spatial_dims = spatial_dims
        self.sizes = [_per_axis(s, spatial_dims) for s in sizes]
        self.scales = [2.0 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        self.ratios = tuple(float(r) for r in ratios)
        self._cache: dict = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per feature position."""
        return len(self.scales) * len(self.ratios)

    def cell_anchors(self, level_index: int) -> torch.Tensor:
        """Anchor extents at one position of a level: ``Tensor[num_anchors, D]`` (float64)."""
        base = torch.tensor(self.sizes[level_index], dtype=torch.float64)
        out = []
        for scale in self.scales:
            for r in self.ratios:
                ext = base * scale
                q = math.sqrt(r)
                ext = torch.cat([ext[:-2], ext[-2:-1] * q, ext[-1:] / q])
                out.append(ext)
        return torch.stack(out)

    def level_anchors(self, level_index: int, shape: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
        """``Tensor[prod(shape) * num_anchors, 2*D]`` (float64) for one level."""
        axes = [(torch.arange(n, dtype=torch.float64) + 0.5) * s for n, s in zip(shape, stride, strict=True)]
        centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 1, self.spatial_dims)
        half = self.cell_anchors(level_index)[None] / 2
        return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 2 * self.spatial_dims)

    def __call__(
        self,
        shapes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> list[torch.Tensor]:
        """Anchors per level, ``[Tensor[A_l, 2*D]]``, for feature ``shapes`` and their ``strides``."""
        if len(shapes) != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} feature levels, got {len(shapes)}")
        key = (tuple(map(tuple, shapes)), tuple(map(tuple, strides)), str(device), dtype)
        if key not in self._cache:
            if len(self._cache) >= 8:  # a few input sizes (training patches, whole images) at once
                self._cache.clear()
            self._cache[key] = [
                self.level_anchors(i, sh, st).to(device=device, dtype=dtype)
                for i, (sh, st) in enumerate(zip(shapes, strides, strict=True))
            ]
        return self._cache[key]


def flatten_head_output(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """Head output ``(B, A*K, *F)`` -> ``(B, prod(F)*A, K)`` in anchor order (position, then anchor)."""
    b, d = x.shape[0], x.dim() - 2
    x = x.reshape(b, -1, per_anchor, *x.shape[2:])  # (B, A, K, *F)
    x = x.permute(0, *range(3, 3 + d), 1, 2)  # (B, *F, A, K)
    return x.reshape(b, -1, per_anchor)
