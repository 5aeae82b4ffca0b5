"""Deterministic, seeded box workloads for the NMS benchmarks (CPU here, GPU in the GPU check).

- "sparse": medical-like; objects of extent 8..32 per axis scattered uniformly over an image
  (volume) whose side grows with N so that a box overlaps about one other box on average.
- "clustered": a detector's raw output; boxes jittered around N/100 (at least 5) centres, scale and
  position jitter up to about 25% of the size, so most of a cluster is suppressed.

Boxes are in our convention (lo..., hi...), float32 unless asked; scores uniform in [0, 1).
"""

from __future__ import annotations

import torch


def sparse_boxes(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    side = 20.0 * 2.0 * (n ** (1.0 / dim))  # ~ (2 * mean extent) per box per axis
    ext = 8.0 + 24.0 * torch.rand(n, dim, generator=g, dtype=torch.float64)
    lo = torch.rand(n, dim, generator=g, dtype=torch.float64) * side
    return torch.cat([lo, lo + ext], dim=1)


def clustered_boxes(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = max(5, n // 100)
    side = 20.0 * 4.0 * (k ** (1.0 / dim))
    centre = torch.rand(k, dim, generator=g, dtype=torch.float64) * side
    size = 10.0 + 30.0 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    which = torch.randint(0, k, (n,), generator=g)
    s = size[which] * (1.0 + 0.25 * (torch.rand(n, dim, generator=g, dtype=torch.float64) - 0.5))
    c = centre[which] + 0.25 * size[which] * (torch.rand(n, dim, generator=g, dtype=torch.float64) - 0.5)
    return torch.cat([c - s / 2, c + s / 2], dim=1)


def make_workload(
    kind: str,
    n: int,
    dim: int,
    *,
    n_groups: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Return (boxes (N, 2*dim), scores (N,), groups (N,) int64 or None when n_groups == 0)."""
    if kind == "sparse":
        boxes = sparse_boxes(n, dim, seed)
    elif kind == "clustered":
        boxes = clustered_boxes(n, dim, seed)
    else:
        raise ValueError(f"make_workload: kind must be 'sparse' or 'clustered', got {kind!r}")
    g = torch.Generator().manual_seed(seed + 1)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    groups = torch.randint(0, n_groups, (n,), generator=g) if n_groups > 0 else None
    boxes, scores = boxes.to(device=device, dtype=dtype), scores.to(device=device, dtype=dtype)
    return boxes, scores, (groups.to(device) if groups is not None else None)
