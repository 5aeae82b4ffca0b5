"""RoIAlign for 2D and 3D feature maps (CPU and CUDA kernels, autograd, torch.compile support).

Coordinate contract: rois are ``Tensor[K, 1 + 2*D]`` = ``(batch_index, lo_0, ..., lo_{D-1}, hi_0, ...,
hi_{D-1})`` in array-axis order (axis 0 first: (y, x) in 2D, like our boxes), continuous coordinates
of the *input image*; ``spatial_scale`` maps them onto the feature map (e.g. 1/4 for stride 4).
Semantics per axis are torchvision's (docs/conventions.md, "RoIAlign"), so in 2D the result equals
``torchvision.ops.roi_align`` once the rois are converted to its (x, y) order.

Robustness: a roi with NaN/inf coordinates (or one whose scaled extent overflows) gives zeros; the
adaptive sampling grid is capped at 2^24 samples per bin per axis and only samples that can land
inside the input are visited, so giant rois cost O(input size) and never read out of bounds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from retina_unet._extension import build_info
from retina_unet.ops._backend import debug_checks, dispatch
from retina_unet.ops._validation import FLOAT_DTYPES, check_same_device
from retina_unet.ops.reference.roi_align import roi_align_reference

__all__ = ["RoIAlign", "roi_align"]


def _check_output_size(output_size: int | Sequence[int], d: int) -> list[int]:
    if isinstance(output_size, numbers.Integral) and not isinstance(output_size, bool):
        sizes = [int(output_size)] * d
    elif isinstance(output_size, Sequence) and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in output_size
    ):
        sizes = [int(s) for s in output_size]
    else:
        raise TypeError(
            f"roi_align: output_size must be an int or a sequence of {d} ints, got {output_size!r}"
        )
    if len(sizes) != d or any(s <= 0 for s in sizes):
        raise ValueError(
            f"roi_align: output_size must be {d} positive ints for {d}D input, got {output_size!r}"
        )
    return sizes


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _check_args(input, rois, output_size, spatial_scale, sampling_ratio, aligned) -> tuple[int, list[int]]:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"roi_align: input must be a torch.Tensor, got {type(input).__name__}")
    if not isinstance(rois, torch.Tensor):
        raise TypeError(f"roi_align: rois must be a torch.Tensor, got {type(rois).__name__}")
    if input.dim() not in (4, 5):
        raise ValueError(
            f"roi_align: input must be 4-d (N, C, H, W) or 5-d (N, C, D0, D1, D2), got shape {tuple(input.shape)}"
        )
    d = input.dim() - 2
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"roi_align: input must be a floating tensor, got {input.dtype}")
    if rois.dim() != 2 or rois.shape[1] != 1 + 2 * d:
        raise ValueError(
            f"roi_align: rois must have shape (K, {1 + 2 * d}) = (batch_index, lo..., hi...) for {d}D input, "
            f"got {tuple(rois.shape)}"
        )
    if rois.dtype != input.dtype:
        raise TypeError(f"roi_align: rois must have the dtype of input ({input.dtype}), got {rois.dtype}")
    check_same_device("roi_align", input=input, rois=rois)
    sizes = _check_output_size(output_size, d)
    if not isinstance(spatial_scale, numbers.Real) or not (
        math.isfinite(spatial_scale) and spatial_scale > 0
    ):
        raise ValueError(f"roi_align: spatial_scale must be a finite number > 0, got {spatial_scale!r}")
    if not isinstance(sampling_ratio, numbers.Integral) or isinstance(sampling_ratio, bool):
        raise TypeError(f"roi_align: sampling_ratio must be an int (<= 0: adaptive), got {sampling_ratio!r}")
    if not isinstance(aligned, bool):
        raise TypeError(f"roi_align: aligned must be a bool, got {aligned!r}")
    # A value check: a device sync on CUDA, so there only under the debug switch (the CUDA kernels
    # give zeros for rois with an invalid batch index, and never read out of bounds).
    if (
        rois.shape[0]
        and not torch.compiler.is_compiling()
        and (rois.device.type == "cpu" or (debug_checks() and not _capturing()))
    ):
        b = rois[:, 0]
        if not bool(((b >= 0) & (b < input.shape[0]) & (b == b.floor())).all()):
            raise ValueError(
                f"roi_align: rois[:, 0] (batch index) must be integers in [0, {input.shape[0]}), got "
                f"values {b.unique()[:8].tolist()}"
            )
    return d, sizes


def roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """RoIAlign on 2D ``(N, C, H, W)`` or 3D ``(N, C, D0, D1, D2)`` features.

    Args:
        input: features ``(N, C, *spatial)``, D = ``input.dim() - 2`` in {2, 3}; float16, bfloat16,
            float32 or float64 (half and bfloat16 are computed in float32).
        rois: ``Tensor[K, 1 + 2*D]`` = (batch_index, lo_0.., hi_0..), same dtype and device as input;
            batch indices are integers in [0, N) (checked on the CPU; on CUDA only with
            ``RETINA_UNET_OPS_DEBUG=1``, since the check synchronises: an invalid one gives zeros).
        output_size: bins per axis, an int or a D-tuple of positive ints.
        spatial_scale: multiplies the roi coordinates (> 0).
        sampling_ratio: samples per bin per axis; <= 0 for adaptive ``ceil(roi_extent / output_size)``.
        aligned: shift the scaled roi by -0.5 (pixel centres at integers); False gives the legacy
            behaviour where the roi extent is at least 1.

    Returns:
        ``Tensor[K, C, *output_size]`` in input's dtype; differentiable with respect to ``input``
        (deterministic when ``torch.use_deterministic_algorithms(True)``).

    Under autocast (``torch.autocast``) input and rois may differ in dtype: both are cast to float32
    and the result is returned in input's dtype, as torchvision does.
    """
    if (
        isinstance(input, torch.Tensor)
        and isinstance(rois, torch.Tensor)
        and input.dtype != rois.dtype
        and torch.is_autocast_enabled(input.device.type)
    ):
        with torch.autocast(input.device.type, enabled=False):
            out = roi_align(input.float(), rois.float(), output_size, spatial_scale, sampling_ratio, aligned)
        return out.to(input.dtype)
    _, sizes = _check_args(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    # Under torch.compile the backend check (done in eager) is not traceable: go straight to the op.
    if not torch.compiler.is_compiling() and dispatch("roi_align", input.device):
        return roi_align_reference(input, rois, sizes, spatial_scale, sampling_ratio, aligned).to(input.dtype)
    return torch.ops.retina_unet.roi_align(
        input, rois, float(spatial_scale), sizes, int(sampling_ratio), aligned
    )


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (2D or 3D, decided by the input's rank)."""

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


# --- registrations: fake kernels (torch.compile); autograd lives in C++ ----------------------------


def _register() -> None:
    if not build_info().available:
        return

    @torch.library.register_fake("retina_unet::roi_align")
    def _roi_align_fake(input, rois, spatial_scale, output_size, sampling_ratio, aligned):
        torch._check(input.dim() in (4, 5), lambda: "roi_align: input must be 4-d or 5-d")
        torch._check(
            len(output_size) == input.dim() - 2, lambda: "roi_align: output_size must have D entries"
        )
        return input.new_empty((rois.shape[0], input.shape[1], *output_size))

    @torch.library.register_fake("retina_unet::_roi_align_backward")
    def _roi_align_backward_fake(
        grad, rois, spatial_scale, output_size, sampling_ratio, aligned, input_shape
    ):
        return grad.new_empty(input_shape)

    # Autograd (and double backward) is registered in C++ for the Autograd dispatch key:
    # csrc/roi_align_autograd.cpp.


_register()
