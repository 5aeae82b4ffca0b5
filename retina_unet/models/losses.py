"""Loss functions shared by the detectors: mined softmax classification, focal, smooth-L1, Dice+CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retina_unet.models.matcher import NEGATIVE


def _zero(t: torch.Tensor) -> torch.Tensor:
    return t.sum() * 0.0  # a zero that keeps the graph (and device/dtype)


def shem_negatives(neg_logits: torch.Tensor, count: int, poolsize: int) -> torch.Tensor:
    """Stochastic hard-example mining (MDT ``shem``): indices of ``count`` negatives drawn at random
    from the ``count * poolsize`` negatives with the highest foreground probability."""
    n = neg_logits.shape[0]
    count = min(count, n)
    with torch.no_grad():
        hardness = F.softmax(neg_logits.float(), dim=1)[:, 1:].max(dim=1).values
        pool = torch.topk(hardness, min(n, count * poolsize)).indices
        pick = torch.randperm(pool.numel(), device=pool.device)[:count]
    return pool[pick]


def shem_class_loss(
    logits: torch.Tensor,
    matches: torch.Tensor,
    gt_labels: torch.Tensor,
    neg_pos_ratio: float = 1.0,
    poolsize: int = 20,
) -> torch.Tensor:
    """Softmax CE on all positive anchors + on mined negatives, averaged: (pos + neg) / 2 (as MDT).

    Args:
        logits: ``(A, C+1)`` class logits of one image (column 0 = background).
        matches: ``(A,)`` from :class:`Matcher` (object index, NEGATIVE, IGNORE).
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


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> dict[str, torch.Tensor]:
    """(soft Dice + pixel CE) / 2 for a class-map target.

    Args:
        logits: ``(B, K, *S)`` with K = background + classes.
        target: ``(B, *S)`` int64 in 0..K-1.
    Dice is a batch Dice (sums over batch and space) per channel, averaged over all K channels,
    background included, as MDT's ``batch_dice``.
    """
    k = logits.shape[1]
    ce = F.cross_entropy(logits, target)
    probs = F.softmax(logits, dim=1)
    onehot = F.one_hot(target, k).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, logits.dim()))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = ((2 * inter + smooth) / (denom + smooth)).mean()
    return {"seg_dice": 1 - dice, "seg_ce": ce, "seg": (1 - dice + ce) / 2}
