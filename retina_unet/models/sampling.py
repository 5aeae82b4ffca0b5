"""Balanced positive/negative sampling for the two-stage detector (RPN anchors and RoIs)."""

from __future__ import annotations

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
