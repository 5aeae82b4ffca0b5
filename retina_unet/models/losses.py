"""Loss functions shared by the detectors: mined softmax classification, focal, smooth-L1, Dice+CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retina_unet.models.matcher import IGNORE, NEGATIVE


def _zero(t: torch.Tensor) -> torch.Tensor:
    return t.sum() * 0.0  # a zero that keeps the graph (and device/dtype)


def shem_negatives(neg_logits: torch.Tensor, count: int, poolsize: int | None) -> torch.Tensor:
    """Stochastic hard-example mining (MDT ``shem``): indices of ``count`` negatives drawn at random
    from the ``count * poolsize`` negatives with the highest foreground probability; with
    ``poolsize=None`` the pool is every negative (uniform sampling)."""
    n = neg_logits.shape[0]
    count = min(count, n)
    with torch.no_grad():
        if poolsize is None:
            return torch.randperm(n, device=neg_logits.device)[:count]
        hardness = F.softmax(neg_logits.float(), dim=1)[:, 1:].max(dim=1).values
        pool = torch.topk(hardness, min(n, count * poolsize)).indices
        pick = torch.randperm(pool.numel(), device=pool.device)[:count]
    return pool[pick]


def cap_positives(matches: torch.Tensor, max_positives: int | None) -> torch.Tensor:
    """``matches`` with all but ``max_positives`` random positives set to IGNORE (MDT subsamples the
    matched anchors to ``rpn_train_anchors_per_image // 2`` per image); None keeps them all."""
    if max_positives is None:
        return matches
    pos = torch.nonzero(matches >= 0).squeeze(1)
    if pos.numel() <= max_positives:
        return matches
    drop = pos[torch.randperm(pos.numel(), device=pos.device)[max_positives:]]
    out = matches.clone()
    out[drop] = IGNORE
    return out


def shem_class_loss(
    logits: torch.Tensor,
    matches: torch.Tensor,
    gt_labels: torch.Tensor,
    neg_pos_ratio: float = 1.0,
    poolsize: int | None = 10,
) -> torch.Tensor:
    """Softmax CE on all positive anchors + on mined negatives, averaged: (pos + neg) / 2 (as MDT).

    Args:
        logits: ``(A, C+1)`` class logits of one image (column 0 = background).
        matches: ``(A,)`` from :class:`Matcher` (object index, NEGATIVE, IGNORE), positives already
            capped (:func:`cap_positives`).
        gt_labels: ``(G,)`` labels in 1..C.
    The number of negatives is ``max(1, round(neg_pos_ratio * num_pos))``, so images without objects
    still learn background from their hardest negatives.
    """
    pos = matches >= 0
    num_pos = int(pos.sum())
    pos_loss = F.cross_entropy(logits[pos], gt_labels[matches[pos]]) if num_pos else _zero(logits)
    neg_logits = logits[matches == NEGATIVE]
    if neg_logits.shape[0] == 0:
        return pos_loss
    sel = shem_negatives(neg_logits, max(1, round(neg_pos_ratio * num_pos)), poolsize)
    neg_loss = F.cross_entropy(
        neg_logits[sel], torch.zeros(sel.numel(), dtype=torch.int64, device=logits.device)
    )
    return (pos_loss + neg_loss) / 2


def focal_class_loss(
    logits: torch.Tensor,
    matches: torch.Tensor,
    gt_labels: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Softmax focal loss over all non-ignored anchors, normalised by max(1, num_pos)."""
    keep = matches >= NEGATIVE
    target = torch.zeros_like(matches)
    pos = matches >= 0
    target[pos] = gt_labels[matches[pos]]
    logp = F.log_softmax(logits[keep].float(), dim=1).gather(1, target[keep, None]).squeeze(1)
    w = torch.where(target[keep] > 0, alpha, 1 - alpha) * (1 - logp.exp()).pow(gamma)
    return -(w * logp).sum() / max(1, int(pos.sum()))


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Smooth-L1 averaged over positives' coordinates; a graph-keeping 0 when there are none."""
    if pred.shape[0] == 0:
        return _zero(pred)
    return F.smooth_l1_loss(pred, target, beta=beta)


def batch_dice_fg(probs: torch.Tensor, onehot: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft batch Dice averaged over the foreground channels 1..K-1 only (MDT ``batch_dice``: "only
    fg dice here"): per channel, sums over batch and space, so a patch without an object gives no
    degenerate per-image term. ``probs``, ``onehot``: ``(B, K, *S)``; returns a scalar in [0, 1]."""
    dims = (0, *range(2, probs.dim()))
    p, t = probs[:, 1:], onehot[:, 1:]
    inter = (p * t).sum(dims)
    denom = p.sum(dims) + t.sum(dims)
    return ((2 * inter + smooth) / (denom + smooth)).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> dict[str, torch.Tensor]:
    """(soft Dice + pixel CE) / 2 for a class-map target (MDT's "dice_wce" with unit weights).

    Args:
        logits: ``(B, K, *S)`` with K = background + foreground channels (K >= 2).
        target: ``(B, *S)`` int64 in 0..K-1.
    Dice: :func:`batch_dice_fg` (foreground channels only); CE covers every channel.
    """
    k = logits.shape[1]
    if k < 2:
        raise ValueError(f"dice_ce_loss: logits need a background and >= 1 foreground channel, got {k}")
    ce = F.cross_entropy(logits, target)
    probs = F.softmax(logits, dim=1)
    onehot = F.one_hot(target, k).movedim(-1, 1).to(probs.dtype)
    dice = batch_dice_fg(probs, onehot, smooth)
    return {"seg_dice": 1 - dice, "seg_ce": ce, "seg": (1 - dice + ce) / 2}
