"""A per-pixel Python loop with the same sample semantics (the reference code's approach).

Slow by design: it is the oracle the tests compare :func:`toy_data.generate_sample` against and
the baseline of ``benchmarks/bench_toy_data.py``. It shares only the random draws (same generator,
same order: classes, centres, background); every pixel is then visited in Python.
"""

from __future__ import annotations

import itertools

import numpy as np

from .generate import BOX_DTYPE, IMAGE_DTYPE, LABEL_DTYPE, MASK_DTYPE, Sample, _place_centres, sample_rng
from .spec import TaskSpec


def generate_sample_loop(spec: TaskSpec, split_seed: int, index: int) -> Sample:
    rng = sample_rng(split_seed, index)
    k, d = spec.objects_per_image, spec.dim
    labels = np.asarray(rng.integers(1, 3, size=k), LABEL_DTYPE)
    centres = _place_centres(spec, rng)
    image = rng.random(spec.shape, dtype=np.float32) if spec.noise else np.zeros(spec.shape, IMAGE_DTYPE)
    mask = np.zeros(spec.shape, MASK_DTYPE)
    lo = [[n] * d for n in [max(spec.shape)] * k]
    hi = [[-1] * d for _ in range(k)]
    contrast = np.float32(spec.contrast)
    for p in itertools.product(*(range(n) for n in spec.shape)):
        for j in range(k):
            cls = int(labels[j])
            radius = spec.radii[cls - 1]
            d2 = sum((p[a] - int(centres[j][a])) ** 2 for a in range(d))
            if not d2 < radius * radius:
                continue
            in_hole = cls == 2 and spec.hole_radius > 0 and d2 < spec.hole_radius**2
            if not in_hole:
                image[p] += contrast
            if in_hole and spec.mask_has_hole:
                continue
            mask[p] = cls
            for a in range(d):
                lo[j][a] = min(lo[j][a], p[a])
                hi[j][a] = max(hi[j][a], p[a] + 1)
    boxes = np.asarray([lo[j] + hi[j] for j in range(k)], BOX_DTYPE)
    return Sample(image, mask, labels, boxes)
