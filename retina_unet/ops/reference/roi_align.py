"""Pure-PyTorch RoIAlign: the float64 oracle, and a ``grid_sample`` formulation for comparison.

Both follow ``retina_unet.ops.roi_align``'s semantics (docs/conventions.md, "RoIAlign"; torchvision's rules per
axis, 2D and 3D). Rois ``Tensor[K, 1 + 2*D]`` = (batch_index, lo_0.., hi_0..), array-axis order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MAX_GRID = 2**24  # samples per bin per axis (as the kernels)


def _output_size(output_size: int | Sequence[int], d: int) -> tuple[int, ...]:
    if isinstance(output_size, int):
        return (output_size,) * d
    return tuple(int(s) for s in output_size)


def _axis_geometry(
    lo: float, hi: float, spatial_scale: float, pooled: int, sampling_ratio: int, aligned: bool
):
    """(start, bin, grid) along one axis, or None when the roi is not finite there."""
    offset = 0.5 if aligned else 0.0
    start = lo * spatial_scale - offset
    extent = (hi * spatial_scale - offset) - start
    if not aligned:
        extent = max(extent, 1.0)
    if not (math.isfinite(start) and math.isfinite(extent)):
        return None
    bin_ = extent / pooled
    grid = sampling_ratio if sampling_ratio > 0 else max(math.ceil(extent / pooled), 0)
    return start, bin_, min(grid, MAX_GRID)


def _sample_window(start: float, bin_: float, grid: int, p: int, size: int) -> range:
    """Sample indices of bin p that can land in [-1, size] (the others contribute 0)."""
    base, step = start + p * bin_, (bin_ / grid if grid else 0.0)
    if step == 0.0:
        return range(grid)
    t0, t1 = sorted(((-1.0 - base) / step - 0.5, (size - base) / step - 0.5))
    return range(int(min(max(math.floor(t0) - 2, 0), grid)), int(min(max(math.ceil(t1) + 3, 0), grid)))


def axis_weights(
    lo: float, hi: float, size: int, pooled: int, spatial_scale: float, sampling_ratio: int, aligned: bool
) -> tuple[torch.Tensor, int] | None:
    """``(W, grid)`` with ``W[p, j]`` the float64 weight the samples of bin p put on index j."""
    geom = _axis_geometry(lo, hi, spatial_scale, pooled, sampling_ratio, aligned)
    if geom is None:
        return None
    start, bin_, grid = geom
    w = torch.zeros(pooled, size, dtype=torch.float64)
    for p in range(pooled):
        i = torch.tensor(list(_sample_window(start, bin_, grid, p, size)), dtype=torch.float64)
        y = (start + p * bin_) + ((i + 0.5) * bin_) / grid  # the kernels' operation order
        y = y[(y >= -1) & (y <= size)].clamp(min=0)
        low = y.floor().long()
        top = low >= size - 1
        low = torch.where(top, torch.full_like(low, size - 1), low)
        high = torch.where(top, low, low + 1)
        frac = torch.where(top, torch.zeros_like(y), y - low.double())
        w[p].index_add_(0, low, 1.0 - frac)
        w[p].index_add_(0, high, frac)
    return w, grid


def roi_align_reference(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """Float64 RoIAlign ``(K, C, *output_size)``; differentiable with respect to ``input``.

    Per roi, per axis k, a matrix ``W_k[p, j]`` collects the linear weights of bin p's samples on
    input index j; the bin values are ``W_0 x W_1 x ... x[b] / count`` (interpolation is separable).
    A roi with non-finite coordinates gives zeros.
    """
    d = input.dim() - 2
    out_size = _output_size(output_size, d)
    x = input.to(torch.float64)
    sizes = tuple(x.shape[2:])
    outs = []
    for roi in rois.to(torch.float64).cpu().tolist():
        b, lo, hi = int(roi[0]), roi[1 : 1 + d], roi[1 + d :]
        axes = [
            axis_weights(lo[k], hi[k], sizes[k], out_size[k], spatial_scale, sampling_ratio, aligned)
            for k in range(d)
        ]
        if any(a is None for a in axes):  # non-finite roi: zeros (still connected to input)
            axes = [(torch.zeros(out_size[k], sizes[k], dtype=torch.float64), 1) for k in range(d)]
        count = max(math.prod(g for _, g in axes), 1)
        v = x[b]  # (C, *sizes)
        for w, _ in axes:  # contract axis 1 each time; the pooled axis goes last
            cols = w.abs().sum(0).nonzero().flatten()
            # only the touched input range (one column of zeros when nothing is touched)
            j0, j1 = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)
            v = torch.tensordot(v.narrow(1, j0, j1 - j0), w[:, j0:j1].to(v.device), dims=([1], [1]))
        outs.append(v / count)
    if not outs:
        return x.new_zeros((0, x.shape[1], *out_size))
    return torch.stack(outs)


def roi_align_grid_sample(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """RoIAlign through ``F.grid_sample`` (the usual pure-PyTorch 3D workaround), in input's dtype.

    Rois sharing an image and a sampling grid go through one ``grid_sample`` call (their sample
    grids stacked along the first axis); the clamping rules are applied to the coordinates and the
    out-of-range samples masked, so the values equal ``roi_align``'s. Every sample is materialised:
    meant for moderate rois (benchmarks, cross-checks), not giant ones.
    """
    d = input.dim() - 2
    out_size = _output_size(output_size, d)
    sizes = tuple(input.shape[2:])
    n_img, c = input.shape[:2]
    k_rois = rois.shape[0]
    offset = 0.5 if aligned else 0.0
    r = rois.detach().to(torch.float64)
    start = r[:, 1 : 1 + d] * spatial_scale - offset
    extent = (r[:, 1 + d :] * spatial_scale - offset) - start
    if not aligned:
        extent = extent.clamp(min=1.0)
    pooled = torch.tensor(out_size, dtype=torch.float64, device=r.device)
    bins = extent / pooled
    finite = torch.isfinite(start).all(1) & torch.isfinite(extent).all(1)
    grids = (
        torch.full_like(extent, float(sampling_ratio))
        if sampling_ratio > 0
        else torch.ceil(torch.where(torch.isfinite(extent), extent, torch.zeros_like(extent)) / pooled).clamp(
            min=0
        )
    )
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (b, g, ok) in enumerate(
        zip(r[:, 0].tolist(), grids.long().tolist(), finite.tolist(), strict=True)
    ):
        if ok and min(g) > 0:
            groups.setdefault((int(b), *g), []).append(i)
    out = input.new_zeros((k_rois, c, *out_size))
    for (b, *grid), members in groups.items():
        idx = torch.tensor(members, device=input.device)
        norm, masks = [], []
        for k in range(d):
            i = torch.arange(out_size[k] * grid[k], dtype=torch.float64, device=r.device)
            p, s = torch.div(i, grid[k], rounding_mode="floor"), torch.remainder(i, grid[k])
            y = (start[idx, k, None] + p * bins[idx, k, None]) + ((s + 0.5) * bins[idx, k, None]) / grid[k]
            masks.append((y >= -1) & (y <= sizes[k]))
            y = y.clamp(0, sizes[k] - 1)
            norm.append(y * (2.0 / max(sizes[k] - 1, 1)) - 1.0)  # align_corners=True
        shape = (len(members), *(out_size[k] * grid[k] for k in range(d)))
        views = [
            norm[k].reshape(len(members), *(-1 if m == k else 1 for m in range(d))).expand(shape)
            for k in range(d)
        ]
        mask = torch.ones(shape, dtype=torch.bool, device=r.device)
        for k in range(d):
            mask = mask & masks[k].reshape(len(members), *(-1 if m == k else 1 for m in range(d)))
        coords = torch.stack(views[::-1], dim=-1).reshape(
            1, shape[0] * shape[1], *shape[2:], d
        )  # (x, y[, z])
        sampled = F.grid_sample(
            input[b : b + 1],
            coords.to(input.dtype),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        ).reshape(c, *shape)
        sampled = sampled * mask.to(input.dtype)
        split = [c, len(members)]
        for k in range(d):
            split += [out_size[k], grid[k]]
        vals = sampled.reshape(split).sum(dim=tuple(3 + 2 * k for k in range(d))) / math.prod(grid)
        out = out.index_put((idx,), vals.transpose(0, 1))
    return out
