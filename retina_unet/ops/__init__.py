"""The one Python entry point to the detection ops (2D and 3D, CPU and CUDA).

Box convention everywhere: ``Tensor[N, 2*D]`` = (lo_0..lo_{D-1}, hi_0..hi_{D-1}) in array-axis
order, continuous coordinates, no "+1"; see :mod:`retina_unet.ops.boxes`.
"""

from retina_unet.ops import _fake  # noqa: F401  (registers fake kernels for torch.compile)
from retina_unet.ops._backend import (
    KERNEL_VERSIONS,
    _apply_env_kernel_version,
    backend_for,
    debug_checks,
    debug_value_checks,
    kernel_version,
    kernel_version_set,
    reference_ops,
    set_kernel_version,
    use_reference,
)
from retina_unet.ops.boxes import (
    box_iou,
    from_mdt,
    from_monai,
    from_torchvision,
    to_mdt,
    to_monai,
    to_torchvision,
)
from retina_unet.ops.nms import batched_nms, batched_nms_padded, nms, nms_padded
from retina_unet.ops.roi_align import RoIAlign, roi_align

__all__ = [
    "nms",
    "batched_nms",
    "nms_padded",
    "batched_nms_padded",
    "backend_for",
    "reference_ops",
    "use_reference",
    "box_iou",
    "from_mdt",
    "from_monai",
    "from_torchvision",
    "to_mdt",
    "to_monai",
    "to_torchvision",
]
__all__ += ["roi_align", "RoIAlign"]
__all__ += [
    "KERNEL_VERSIONS",
    "set_kernel_version",
    "kernel_version",
    "kernel_version_set",
    "debug_checks",
    "debug_value_checks",
]

_apply_env_kernel_version()
