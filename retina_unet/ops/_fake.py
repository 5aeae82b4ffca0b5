"""Fake (meta) kernels so the ops trace under ``torch.compile`` and ``torch.library.opcheck``."""

from __future__ import annotations

import torch

from retina_unet._extension import build_info


def _register() -> None:
    if not build_info().available:
        return

    @torch.library.register_fake("retina_unet::box_iou")
    def _box_iou_fake(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
        torch._check(boxes1.dim() == 2 and boxes2.dim() == 2, lambda: "box_iou: boxes must be 2-d")
        return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


_register()
