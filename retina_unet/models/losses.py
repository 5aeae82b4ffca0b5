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


# --- batched: a whole batch of images at once, one loss per image ---------------------------------
# The per-image functions above are the reference (tests/test_losses_batched.py): each ``*_batched``
# returns ``(B,)``, entry b equal (to float32 rounding: sums in another order) to the per-image
# function on image b. Positives, negatives and the drawn samples are ``(B, A)`` masks; the loss
# terms are computed on the selected anchors of all images together and summed per image with one
# ``index_add``, instead of per-image indexing (same gradients: zero outside the selection).


@torch.no_grad()
def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """SHEM hardness ``(...)`` of class logits ``(..., C+1)``: the highest foreground softmax
    probability, computed as :func:`shem_negatives` does (same values, so the same ranking)."""
    return F.softmax(logits.float(), dim=-1)[..., 1:].max(dim=-1).values


def per_image_sum(values: torch.Tensor, image: torch.Tensor, num_images: int) -> torch.Tensor:
    """``(num_images,)``: the sum of ``values (N,)`` over the rows of each image (``image (N,)``)."""
    return values.new_zeros(num_images).index_add(0, image, values)


def flat_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into ``mask.flatten()`` of the True entries of a ``(B, A)`` mask, and their image."""
    rows = torch.nonzero(mask.flatten()).squeeze(1)
    return rows, torch.div(rows, mask.shape[1], rounding_mode="floor")


def shem_class_loss_batched(
    logits: torch.Tensor, matches: torch.Tensor, gt_labels: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """:func:`shem_class_loss` per image of a batch: ``(B,)``.

    Args:
        logits: ``(B, A, C+1)``. matches: ``(B, A)``, positives already capped.
        gt_labels: ``(B, A)`` the label of each anchor's matched object (read where matches >= 0).
        negatives: ``(B, A)`` bool, the mined negatives
            (:func:`retina_unet.models.sampling.sample_anchors_batched`).
    An image without negatives has the positive term only, one without positives a 0 positive
    term (in the graph), as per image.
    """
    b = matches.shape[0]
    pos = matches >= 0
    pos_rows, pos_image = flat_rows(pos)
    neg_rows, neg_image = flat_rows(negatives)
    target = torch.cat([gt_labels.flatten()[pos_rows], torch.zeros_like(neg_rows)])
    ce = F.cross_entropy(logits.flatten(0, 1)[torch.cat([pos_rows, neg_rows])].float(), target, reduction="none")
    n = pos_rows.shape[0]
    pos_loss = per_image_sum(ce[:n], pos_image, b) / pos.sum(1).clamp(min=1)
    neg_loss = per_image_sum(ce[n:], neg_image, b) / negatives.sum(1).clamp(min=1)
    has_neg = (matches == NEGATIVE).any(dim=1)
    return torch.where(has_neg, (pos_loss + neg_loss) / 2, pos_loss)


def focal_class_loss_batched(
    logits: torch.Tensor,
    matches: torch.Tensor,
    gt_labels: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """:func:`focal_class_loss` per image of a batch: ``(B,)``. ``logits (B, A, C+1)``,
    ``matches (B, A)``, ``gt_labels (B, A)`` as in :func:`shem_class_loss_batched`. Every
    non-ignored anchor counts, so this one is dense: a masked sum over all anchors."""
    keep = matches >= NEGATIVE
    pos = matches >= 0
    target = torch.where(pos, gt_labels, 0)
    # class axis second: the softmax over a short last axis is several times slower on the CPU
    logp = F.log_softmax(logits.float().transpose(1, 2), dim=1).gather(1, target[:, None]).squeeze(1)
    w = torch.where(target > 0, alpha, 1 - alpha) * (1 - logp.exp()).pow(gamma)
    return -torch.where(keep, w * logp, 0.0).sum(1) / pos.sum(1).clamp(min=1)


def box_regression_loss_batched(
    pred: torch.Tensor, target: torch.Tensor, image: torch.Tensor, num_images: int, beta: float = 1.0
) -> torch.Tensor:
    """:func:`box_regression_loss` per image of a batch: ``(num_images,)``. ``pred``, ``target``:
    ``(P, 2*D)``, the positives of all images, ``image (P,)`` theirs; smooth-L1 averaged over each
    image's coordinates, 0 (in the graph) for an image without positives."""
    loss = F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(1)
    count = torch.bincount(image, minlength=num_images) * pred.shape[1]
    return per_image_sum(loss, image, num_images) / count.clamp(min=1)


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
