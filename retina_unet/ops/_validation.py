"""Argument checks shared by the ops: each error names the argument and what was expected."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_boxes(op: str, name: str, boxes: torch.Tensor, *, finite: bool = True) -> int:
    """Check ``boxes`` is a floating ``Tensor[N, 2*D]`` with D in {2, 3}; return D."""
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(
            f"{op}: {name} must have shape (N, 4) for 2D or (N, 6) for 3D boxes "
            f"(lo..., hi...), got {tuple(boxes.shape)}"
        )
    if boxes.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be a floating tensor (float16/bfloat16/float32/float64), got {boxes.dtype}")
    if finite and boxes.numel() and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{op}: {name} contains NaN or infinite coordinates")
    return boxes.shape[1] // 2


def check_same_device(op: str, **tensors: torch.Tensor) -> torch.device:
    """Check every tensor lives on one device; return it."""
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{op}: all inputs must be on the same device, got {listed}")
    return first
