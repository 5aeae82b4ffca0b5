"""Slow float64 pure-PyTorch references of every op: the oracle the kernels are tested against."""

from retina_unet.ops.reference.boxes import box_iou_reference, box_volume_reference

__all__ = ["box_iou_reference", "box_volume_reference"]
