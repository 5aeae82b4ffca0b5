"""Slow float64 pure-PyTorch references of every op: the oracle the kernels are tested against."""

from retina_unet.ops.reference.boxes import box_iou_reference, box_volume_reference
from retina_unet.ops.reference.nms import batched_nms_reference, nms_reference
from retina_unet.ops.reference.roi_align import roi_align_grid_sample, roi_align_reference

__all__ = ["box_iou_reference", "box_volume_reference"]
__all__ += ["nms_reference", "batched_nms_reference"]
__all__ += ["roi_align_reference", "roi_align_grid_sample"]
