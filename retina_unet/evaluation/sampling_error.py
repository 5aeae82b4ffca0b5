"""How much a test mAP moves with the test images drawn: the bootstrap over test images.

A run evaluated on ``n`` test images instead of the whole test split trades inference time for
sampling error. :func:`bootstrap_map` measures that error from one set of stored predictions: it
draws ``n`` images with replacement from the evaluated images, ``reps`` times, and recomputes the
mAP of each draw with the same matching and AP as :func:`retina_unet.evaluation.evaluate_detections`
(matches are computed once per image and class, then pooled per draw). The standard deviation of
the draws is the test-set sampling error of an ``n``-image evaluation, to be set next to the
seed-to-seed spread of the runs (the study's unit of replication).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retina_unet.evaluation.ap import average_precision
from retina_unet.evaluation.matching import match_dataset


def bootstrap_map(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    num_classes: int,
    n_images: int | Sequence[int],
    reps: int = 1000,
    seed: int = 0,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
) -> dict[int, dict[str, float]]:
    """Bootstrap distribution of the mAP of ``n_images`` test images drawn with replacement.

    Args:
        predictions, targets: one dict per image, as for ``evaluate_detections``.
        num_classes: foreground classes (labels 1..num_classes).
        n_images: draw size(s), each >= 1.
        reps: draws per size (>= 2). seed: seed of the draws (``numpy.random.default_rng``).

    Returns:
        ``{n: {"mean", "sd", "q025", "q975"}}`` of the draws' mAPs (a draw whose classes all lack
        ground truth has no mAP and is left out).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"predictions: {len(predictions)} images but targets: {len(targets)}")
    if not predictions:
        raise ValueError("predictions: need at least one image")
    sizes = [n_images] if isinstance(n_images, int) else list(n_images)
    if any(int(n) < 1 for n in sizes):
        raise ValueError(f"n_images: each draw size must be >= 1, got {sizes}")
    if reps < 2:
        raise ValueError(f"reps: need >= 2 draws, got {reps}")
    per_class = [match_dataset(predictions, targets, c, iou_threshold, score_threshold)
                 for c in range(1, num_classes + 1)]
    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, float]] = {}
    for n in sizes:
        values = []
        for _ in range(reps):
            idx = rng.integers(0, len(predictions), size=int(n))
            aps = []
            for matches in per_class:
                drawn = [matches[i] for i in idx]
                n_gt = sum(m.n_gt for m in drawn)
                if n_gt == 0:
                    continue
                aps.append(average_precision(np.concatenate([m.scores for m in drawn]),
                                             np.concatenate([m.is_tp for m in drawn]), n_gt))
            if aps:
                values.append(float(np.mean(aps)))
        v = np.asarray(values)
        out[int(n)] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)),
                       "q025": float(np.quantile(v, 0.025)), "q975": float(np.quantile(v, 0.975))}
    return out
