"""Vectorised, per-sample-seeded generation of toy images, masks, labels and boxes.

Sample ``i`` of a split is a pure function of ``(spec, split_seed, i)``: its random numbers come
from ``PCG64(SeedSequence([split_seed, i]))`` and nothing else. Hence a split of size n is the
first n samples of any larger split (nested training sets) and any number of workers produces
identical bytes.

Per sample, in this order: the K classes (uniform over {1, 2}), the K centres, the background.
Each object only touches its bounding window, where the strict disc/ball test is one broadcast
over per-axis squared offsets.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .spec import TaskSpec, grid_capacity

# Bump when a sample's bytes for a given (spec, split_seed, index) change.
GENERATOR_VERSION = "1.0"

IMAGE_DTYPE = np.dtype("<f4")
MASK_DTYPE = np.dtype("u1")
LABEL_DTYPE = np.dtype("<i8")
BOX_DTYPE = np.dtype("<f4")

# Random placement (K > 1): batches of candidate centres before falling back to a jittered grid.
_CANDIDATES_PER_BATCH = 64
_MAX_BATCHES = 16


@dataclass(frozen=True)
class Sample:
    """One generated sample.

    Attributes:
        image: float32 ``(*shape)``.
        mask: uint8 ``(*shape)``; 0 background, else the class (1 or 2) of the object there.
        labels: int64 ``(K,)`` class of each object.
        boxes: float32 ``(K, 2*D)`` = (lo_0, ..., lo_{D-1}, hi_0, ..., hi_{D-1}) in array-axis order;
            mask pixels i..j on an axis give [i, j + 1).
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray


def sample_rng(split_seed: int, index: int) -> np.random.Generator:
    """The generator that drives sample ``index`` of the split seeded ``split_seed``."""
    if split_seed < 0 or index < 0:
        raise ValueError(f"split_seed and index must be >= 0, got {split_seed}, {index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(split_seed), int(index)])))


def generate_sample(spec: TaskSpec, split_seed: int, index: int) -> Sample:
    """Sample ``index`` of the split seeded ``split_seed`` (deterministic)."""
    image = np.empty(spec.shape, IMAGE_DTYPE)
    mask = np.empty(spec.shape, MASK_DTYPE)
    labels = np.empty(spec.objects_per_image, LABEL_DTYPE)
    boxes = np.empty((spec.objects_per_image, 2 * spec.dim), BOX_DTYPE)
    _fill_sample(spec, sample_rng(split_seed, index), image, mask, labels, boxes)
    return Sample(image, mask, labels, boxes)


def generate_split(spec: TaskSpec, split_seed: int, n: int, workers: int = 1) -> dict[str, np.ndarray]:
    """Samples ``0..n-1`` stacked: ``images (n, *shape)`` float32, ``masks`` uint8, ``labels (n, K)``
    int64, ``boxes (n, K, 2*D)`` float32. ``workers > 1`` fills chunks in parallel threads (numpy's
    generators release the GIL while filling), writing straight into the result: same bytes."""
    workers = resolve_workers(workers)
    out = empty_arrays(spec, n)
    step = default_chunk(spec)
    ranges = [(s, min(s + step, n)) for s in range(0, n, step)]
    if workers == 1 or len(ranges) <= 1:
        generate_range(spec, split_seed, 0, n, out=out)
        return out
    with make_pool(workers) as pool:
        futures = [
            pool.submit(generate_range, spec, split_seed, s, e, out={k: v[s:e] for k, v in out.items()})
            for s, e in ranges
        ]
        for f in futures:
            f.result()
    return out


def empty_arrays(spec: TaskSpec, n: int) -> dict[str, np.ndarray]:
    k, d = spec.objects_per_image, spec.dim
    return {
        "images": np.empty((n, *spec.shape), IMAGE_DTYPE),
        "masks": np.empty((n, *spec.shape), MASK_DTYPE),
        "labels": np.empty((n, k), LABEL_DTYPE),
        "boxes": np.empty((n, k, 2 * d), BOX_DTYPE),
    }


def generate_range(
    spec: TaskSpec, split_seed: int, start: int, stop: int, out: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Samples ``start..stop-1`` stacked, into ``out`` (arrays of length ``stop - start``) if given."""
    out = empty_arrays(spec, stop - start) if out is None else out
    for j, index in enumerate(range(start, stop)):
        _fill_sample(
            spec,
            sample_rng(split_seed, index),
            out["images"][j],
            out["masks"][j],
            out["labels"][j],
            out["boxes"][j],
        )
    return out


def default_chunk(spec: TaskSpec) -> int:
    """Samples per pool task: about 8 MB of images, so transfers stay cheap and memory bounded."""
    return max(1, min(256, (8 << 20) // (4 * math.prod(spec.shape))))


def make_pool(workers: int) -> Executor:
    """The worker pool: threads. The bulk of a sample's cost, filling the background, runs in numpy
    without the GIL, and threads avoid copying every chunk between processes (measured on 2 CPUs:
    a process pool spent more time pickling chunks than generating them)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="toy_data")


def resolve_workers(workers: int | None) -> int:
    """``None``: one generation thread per CPU beyond the first, at most 4 (when writing, a writer
    and a hasher thread keep the remaining CPU busy)."""
    if workers is None:
        return max(1, min(4, (os.cpu_count() or 1) - 1))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (or None for automatic), got {workers!r}")
    return workers


def iter_chunks(
    spec: TaskSpec,
    split_seed: int,
    n: int,
    *,
    workers: int = 1,
    chunk: int | None = None,
    pool: Executor | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive chunks of samples ``0..n-1``, in index order.

    With ``workers > 1`` (or a given ``pool``) chunks are generated in parallel threads; at most
    ``2 * workers`` are in flight, so memory stays bounded while the consumer writes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chunk = chunk or default_chunk(spec)
    ranges = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    workers = resolve_workers(workers)
    if pool is None and (workers == 1 or len(ranges) <= 1):
        for s, e in ranges:
            yield generate_range(spec, split_seed, s, e)
        return
    own = pool is None
    pool = pool or make_pool(workers)
    try:
        window = 2 * max(workers, getattr(pool, "_max_workers", workers))
        pending: deque = deque()
        todo = iter(ranges)
        for s, e in todo:
            pending.append(pool.submit(generate_range, spec, split_seed, s, e))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(generate_range, spec, split_seed, *nxt))
            yield result
    finally:
        if own:
            pool.shutdown(cancel_futures=True)


# --- one sample ----------------------------------------------------------------------------------


def _fill_sample(
    spec: TaskSpec,
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
) -> None:
    """Draw one sample into the given (preallocated) arrays."""
    k, d = spec.objects_per_image, spec.dim
    labels[:] = rng.integers(1, 3, size=k)
    centres = _place_centres(spec, rng)
    if spec.noise:
        rng.random(out=image, dtype=np.float32)
    else:
        image.fill(0)
    mask.fill(0)
    contrast = np.float32(spec.contrast)
    for j in range(k):
        cls = int(labels[j])
        radius = spec.radii[cls - 1]
        hole = spec.hole_radius if cls == 2 else 0.0
        window, lo = _window(centres[j], radius, spec.shape)
        d2 = _squared_distances(centres[j], window)
        body = d2 < radius * radius
        if hole > 0:
            in_hole = d2 < hole * hole
            lit = body & ~in_hole
            obj_mask = lit if spec.mask_has_hole else body
        else:
            lit = obj_mask = body
        np.add(image[window], contrast, out=image[window], where=lit)
        mask[window][obj_mask] = cls
        for axis in range(d):
            other = tuple(a for a in range(d) if a != axis)
            hit = np.flatnonzero(obj_mask.any(axis=other))
            boxes[j, axis] = lo[axis] + hit[0]
            boxes[j, d + axis] = lo[axis] + hit[-1] + 1


def _window(centre: np.ndarray, radius: float, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], list[int]]:
    """The object's bounding window (pixels with |offset| < radius per axis), clipped to the image."""
    reach = math.ceil(radius) - 1
    lo = [max(int(c) - reach, 0) for c in centre]
    hi = [min(int(c) + reach + 1, n) for c, n in zip(centre, shape, strict=True)]
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), lo


def _squared_distances(centre: np.ndarray, window: tuple[slice, ...]) -> np.ndarray:
    """Integer squared distance to ``centre`` of every pixel in ``window`` (broadcast over axes)."""
    d = len(window)
    total = None
    for axis, sl in enumerate(window):
        off = np.arange(sl.start, sl.stop, dtype=np.int64) - int(centre[axis])
        sq = (off * off).reshape([-1 if a == axis else 1 for a in range(d)])
        total = sq if total is None else total + sq
    return total


def _place_centres(spec: TaskSpec, rng: np.random.Generator) -> np.ndarray:
    """K integer centres uniform in [margin, size - margin) per axis, pairwise >= min distance."""
    lo = spec.margin
    hi = np.asarray(spec.shape) - spec.margin
    k = spec.objects_per_image
    if k == 1:
        return rng.integers(lo, hi, size=(1, spec.dim))
    # Random sequential placement: accept a candidate when it keeps its distance to all placed ones.
    min_d2 = spec.min_centre_distance**2
    placed: list[np.ndarray] = []
    for _ in range(_MAX_BATCHES):
        for cand in rng.integers(lo, hi, size=(_CANDIDATES_PER_BATCH, spec.dim)):
            if all(float(((cand - p) ** 2).sum()) >= min_d2 for p in placed):
                placed.append(cand)
                if len(placed) == k:
                    return np.stack(placed)
    return _grid_centres(spec, rng)


def _grid_centres(spec: TaskSpec, rng: np.random.Generator) -> np.ndarray:
    """Dense fallback: K random cells of a grid with ceil(min distance) spacing, jittered as a whole."""
    step = math.ceil(spec.min_centre_distance)
    counts, offsets = [], []
    for size in spec.shape:
        span = size - 2 * spec.margin - 1  # centre positions margin..size-margin-1
        n = span // step + 1
        counts.append(n)
        offsets.append(spec.margin + int(rng.integers(0, span - (n - 1) * step + 1)))
    assert math.prod(counts) == grid_capacity(spec)
    cells = rng.choice(math.prod(counts), size=spec.objects_per_image, replace=False)
    idx = np.stack(np.unravel_index(cells, counts), axis=1)
    return np.asarray(offsets) + idx * step
