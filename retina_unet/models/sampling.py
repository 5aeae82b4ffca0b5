"""Positive/negative sampling: balanced RoI sampling of the two-stage detector, and the batched
positive cap + SHEM negative draws of the anchor losses (one-stage class loss, RPN).

The batched samplers reproduce the per-image functions' random draws exactly: the same
``torch.randperm`` calls (same sizes, same order: image by image, positives before negatives) on
the global generator, only everything around them (counting, hardness ranking, indexing) runs once
for the batch. Per-image references: :func:`retina_unet.models.losses.cap_positives`,
:func:`retina_unet.models.losses.shem_negatives`, :func:`sample_balanced`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def sample_balanced(
    matches: torch.Tensor, batch_size: int, positive_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random indices of positives (``matches >= 0``) and negatives (``matches == -1``).

    At most ``batch_size * positive_fraction`` positives; negatives fill the rest of ``batch_size``.
    Returns ``(pos_idx, neg_idx)`` int64.
    """
    pos = torch.nonzero(matches >= 0).squeeze(1)
    neg = torch.nonzero(matches == -1).squeeze(1)
    n_pos = min(pos.numel(), int(batch_size * positive_fraction))
    n_neg = min(neg.numel(), batch_size - n_pos)
    pos = pos[torch.randperm(pos.numel(), device=pos.device)[:n_pos]]
    neg = neg[torch.randperm(neg.numel(), device=neg.device)[:n_neg]]
    return pos, neg


def offsets(counts: Sequence[int]) -> list[int]:
    """Where each of consecutive blocks of ``counts`` starts: ``[0, c0, c0 + c1, ...]``."""
    out, s = [], 0
    for c in counts:
        out.append(s)
        s += c
    return out


def _take(rows: list[torch.Tensor], source: torch.Tensor, size: int) -> torch.Tensor:
    """``Tensor[size]`` bool, True at ``source[cat(rows)]``."""
    mask = torch.zeros(size, dtype=torch.bool, device=source.device)
    if rows:
        mask[source[torch.cat(rows)]] = True
    return mask


@torch.no_grad()
def sample_anchors_batched(
    pos: torch.Tensor,
    neg: torch.Tensor,
    max_positives: int | None,
    negatives_for: Callable[[int], int],
    hardness: torch.Tensor | None,
    poolsize: int | None,
    always_draw: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of a batch: random positives (at most ``max_positives``) and SHEM negatives.

    Args:
        pos, neg: ``(B, A)`` bool masks of the positive and the negative anchors.
        max_positives: positives kept per image, drawn at random (None: all, no draw).
        negatives_for: number of negatives to draw given the number of kept positives (at most
            the image's negatives are drawn).
        hardness: ``(B, A)`` foreground probability (SHEM ranks the negatives by it); unused when
            ``poolsize`` is None.
        poolsize: negatives are drawn from the ``count * poolsize`` hardest; None: from all.
        always_draw: draw even where the draw cannot change the result (the RPN's per-image code
            does; the one-stage code only caps images with more than ``max_positives`` positives and
            mines only where there are negatives). Keeps the generator calls identical.

    Returns ``(kept positives, drawn negatives)``, both ``(B, A)`` bool.

    Image b draws ``randperm(#pos_b)`` (keep the first ``max_positives``), then
    ``randperm(#neg_b)`` (no pool) or ``randperm(pool_b)`` (the pool: the image's negatives
    sorted by decreasing hardness, first ``min(#neg_b, count * poolsize)``) and takes the first
    ``count``: the draws of :func:`~retina_unet.models.losses.cap_positives` and
    :func:`~retina_unet.models.losses.shem_negatives`. The pool is a ``topk`` per image, on the
    image's negatives' hardness laid out as :func:`shem_negatives` gets it: ``topk`` does not
    specify the order of tied values (e.g. anchors whose features are all zero after a ReLU), but
    on the same input it returns the same order, so the pool, and the drawn negatives, are the
    per-image ones also when values tie (one ``topk`` over the whole batch would not be).
    """
    b, a = pos.shape
    dev = pos.device
    npos, nneg = torch.stack([pos.sum(1), neg.sum(1)]).tolist()
    kept = [p if max_positives is None else min(p, max_positives) for p in npos]
    counts = [min(negatives_for(k), n) for k, n in zip(kept, nneg, strict=True)]
    neg_source = torch.nonzero(neg.flatten()).squeeze(1)  # image by image, in anchor order
    neg_starts = offsets(nneg)
    if poolsize is None:
        sizes = nneg
    else:
        sizes = [min(n, c * poolsize) for c, n in zip(counts, nneg, strict=True)]
        # each image's negatives' hardness, in the order shem_negatives sees them
        neg_hardness = hardness.flatten()[neg_source].split(nneg)
    cap = max_positives is not None
    pos_source = torch.nonzero(pos.flatten()).squeeze(1) if cap else None
    pos_starts = offsets(npos)
    drop_rows, neg_rows = [], []
    for i in range(b):  # the draws (and the pool), image by image as per image
        if cap and (always_draw or npos[i] > max_positives):
            drop_rows.append(torch.randperm(npos[i], device=dev)[kept[i] :] + pos_starts[i])
        if always_draw or nneg[i]:
            pick = torch.randperm(sizes[i], device=dev)[: counts[i]]
            if poolsize is not None:  # topk on the same values as per image: the same pool order
                pick = torch.topk(neg_hardness[i], sizes[i]).indices[pick]
            neg_rows.append(pick + neg_starts[i])
    kept_pos = pos.flatten() & ~_take(drop_rows, pos_source, b * a) if cap else pos.flatten()
    return kept_pos.view(b, a), _take(neg_rows, neg_source, b * a).view(b, a)
