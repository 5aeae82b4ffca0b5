"""Box IoU and converters between our box convention and the peers'.

Our convention (the only one inside this project): ``Tensor[N, 2*D]`` =
``(lo_0, ..., lo_{D-1}, hi_0, ..., hi_{D-1})`` with axis k = tensor spatial axis k (array order:
y before x in 2D, axis 0 first in 3D), continuous coordinates, no "+1". D in {2, 3} is inferred
from the width.
"""

from __future__ import annotations

import torch

from retina_unet.ops._backend import debug_checks, dispatch
from retina_unet.ops._validation import check_boxes, check_same_device
from retina_unet.ops.reference.boxes import box_iou_reference


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two sets of 2D or 3D boxes.

    Args:
        boxes1: ``Tensor[N, 2*D]`` in our convention.
        boxes2: ``Tensor[M, 2*D]``, same D, dtype and device as ``boxes1``.

    Returns:
        ``Tensor[N, M]`` of IoU in [0, 1], dtype of the inputs (half and bfloat16 are computed in
        float32). Zero-volume or inverted boxes have IoU 0 with everything.

    Raises:
        ValueError / TypeError: shapes, dtypes, devices that do not match, or NaN/inf coordinates
        (checked on the CPU; on CUDA only with ``RETINA_UNET_OPS_DEBUG=1``).
    """
    # The NaN/inf check reads values: a device sync on CUDA, so there only under the debug switch
    # (the CUDA kernel gives NaN IoUs for such boxes and never fails).
    finite = not isinstance(boxes1, torch.Tensor) or boxes1.device.type == "cpu" or debug_checks()
    d1 = check_boxes("box_iou", "boxes1", boxes1, finite=finite)
    d2 = check_boxes("box_iou", "boxes2", boxes2, finite=finite)
    if d1 != d2:
        raise ValueError(f"box_iou: boxes1 is {d1}D ({boxes1.shape[1]} columns) but boxes2 is {d2}D ({boxes2.shape[1]})")
    if boxes1.dtype != boxes2.dtype:
        raise TypeError(f"box_iou: boxes1 and boxes2 must share a dtype, got {boxes1.dtype} and {boxes2.dtype}")
    device = check_same_device("box_iou", boxes1=boxes1, boxes2=boxes2)
    if dispatch("box_iou", device):
        return box_iou_reference(boxes1, boxes2).to(boxes1.dtype)
    return torch.ops.retina_unet.box_iou(boxes1, boxes2)


# --- converters -----------------------------------------------------------------------------------
# torchvision (2D): (x1, y1, x2, y2) with x = axis 1 (columns), y = axis 0 (rows).
# MONAI: mode "xyxy"/"xyzxyz" lists the image's spatial axes in array order too (x = axis 0), so
#   MONAI's corner modes equal our convention; only MONAI's "cccwhd"-style modes would differ.
# Reference code (medicaldetectiontoolkit): (y1, x1, y2, x2[, z1, z2]) with y = axis 0, x = axis 1,
#   z = axis 2, and inclusive "+1" pixel extents, which we do not add or remove here.


def _dims(boxes: torch.Tensor, name: str) -> int:
    if boxes.dim() != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"{name}: boxes must have shape (N, 4) or (N, 6), got {tuple(boxes.shape)}")
    return boxes.shape[1] // 2


def to_torchvision(boxes: torch.Tensor) -> torch.Tensor:
    """Ours ``(lo_y, lo_x, hi_y, hi_x)`` -> torchvision ``(x1, y1, x2, y2)``. 2D only."""
    if _dims(boxes, "to_torchvision") != 2:
        raise ValueError("to_torchvision: torchvision boxes are 2D; got 3D boxes (N, 6)")
    return boxes[:, [1, 0, 3, 2]]


def from_torchvision(boxes: torch.Tensor) -> torch.Tensor:
    """torchvision ``(x1, y1, x2, y2)`` -> ours ``(lo_y, lo_x, hi_y, hi_x)``. 2D only."""
    if _dims(boxes, "from_torchvision") != 2:
        raise ValueError("from_torchvision: torchvision boxes are 2D; got (N, 6)")
    return boxes[:, [1, 0, 3, 2]]


def to_monai(boxes: torch.Tensor) -> torch.Tensor:
    """Ours -> MONAI corner mode (``xyxy`` / ``xyzxyz``): the same layout, returned as a copy."""
    _dims(boxes, "to_monai")
    return boxes.clone()


def from_monai(boxes: torch.Tensor) -> torch.Tensor:
    """MONAI corner mode (``xyxy`` / ``xyzxyz``) -> ours: the same layout, returned as a copy."""
    _dims(boxes, "from_monai")
    return boxes.clone()


def to_mdt(boxes: torch.Tensor) -> torch.Tensor:
    """Ours -> reference-code order ``(y1, x1, y2, x2[, z1, z2])``."""
    if _dims(boxes, "to_mdt") == 2:
        return boxes.clone()
    return boxes[:, [0, 1, 3, 4, 2, 5]]


def from_mdt(boxes: torch.Tensor) -> torch.Tensor:
    """Reference-code order ``(y1, x1, y2, x2[, z1, z2])`` -> ours."""
    if _dims(boxes, "from_mdt") == 2:
        return boxes.clone()
    return boxes[:, [0, 1, 4, 2, 3, 5]]
