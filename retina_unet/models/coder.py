"""Box <-> regression-delta coding, any D: centre offsets in anchor extents and log size ratios."""

from __future__ import annotations

import math

import torch


class BoxCoder:
    """deltas = (w_c * (c_box - c_ref) / ext_ref, w_s * log(ext_box / ext_ref)), per axis.

    Boxes ``Tensor[N, 2*D]`` (lo..., hi...). ``decode`` clamps the log sizes at ``log_clamp`` so
    untrained heads cannot overflow ``exp``. ``decode(encode(b, r), r) == b`` for valid boxes.
    """

    def __init__(
        self, center_weight: float = 10.0, size_weight: float = 5.0, log_clamp: float = math.log(1000.0 / 16)
    ):
        self.center_weight = float(center_weight)
        self.size_weight = float(size_weight)
        self.log_clamp = float(log_clamp)

    @staticmethod
    def _centre_extent(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = boxes.shape[-1] // 2
        lo, hi = boxes[..., :d], boxes[..., d:]
        return (lo + hi) / 2, hi - lo

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deltas ``Tensor[N, 2*D]`` that turn ``reference`` boxes into ``boxes`` (row-wise)."""
        c, e = self._centre_extent(boxes)
        cr, er = self._centre_extent(reference)
        e = e.clamp(min=1e-6)
        return torch.cat([self.center_weight * (c - cr) / er, self.size_weight * torch.log(e / er)], dim=-1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes ``Tensor[..., 2*D]`` from ``deltas`` relative to ``reference`` (broadcasting)."""
        d = deltas.shape[-1] // 2
        cr, er = self._centre_extent(reference)
        c = cr + deltas[..., :d] / self.center_weight * er
        e = er * torch.exp((deltas[..., d:] / self.size_weight).clamp(max=self.log_clamp))
        return torch.cat([c - e / 2, c + e / 2], dim=-1)


def clip_boxes(boxes: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Clamp ``Tensor[N, 2*D]`` to the image ``[0, size_k]`` per axis."""
    hi = torch.tensor(list(size) * 2, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), hi)
