"""Non-maximum suppression for 2D and 3D boxes: plain, batched (per group), and padded (sync-free).

Semantics (docs/conventions.md, "NMS"), the same on every device and in the reference:

- candidates in order of score descending, ties by index ascending;
- a candidate is kept iff no kept box (of its group, for the batched ops) has IoU > ``iou_threshold``
  with it (strict: IoU equal to the threshold is kept);
- zero-volume or inverted boxes have IoU 0 with everything: always kept, never suppress;
- IoU in float32 (float64 for float64 boxes); float16/bfloat16 are computed in float32. The
  decision is ``iou > iou_threshold`` on that rounded IoU against the exact threshold (so an IoU of
  exactly 1/10 rounds up in float32 and is suppressed at ``iou_threshold=0.1``);
- ``max_output`` stops after that many kept boxes (in total, for the batched ops).

Boxes are ``Tensor[N, 2*D]`` = (lo_0..lo_{D-1}, hi_0..hi_{D-1}) in array-axis order (see
:mod:`retina_unet.ops.boxes`); D in {2, 3} is inferred from the width.
"""

from __future__ import annotations

import numbers

import torch

from retina_unet._extension import build_info
from retina_unet.ops._backend import debug_checks, dispatch
from retina_unet.ops._validation import check_boxes, check_same_device
from retina_unet.ops.reference.nms import batched_nms_reference, nms_reference

__all__ = ["nms", "batched_nms", "nms_padded", "batched_nms_padded"]


def _skip_data_checks() -> bool:
    """Checks that read tensor values would synchronise (CUDA graphs) or break the graph."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _check(
    op: str,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor | None,
    iou_threshold: float,
    max_output: int | None,
    *,
    padded: bool,
) -> tuple[torch.device, torch.Tensor | None]:
    """Validate the arguments' types, shapes, devices and values (each error names the argument).

    Returns the device and the groups as int64. NaN/inf values are checked by :func:`_check_values`.
    """
    check_boxes(op, "boxes", boxes, finite=False)
    n = boxes.shape[0]
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{op}: scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"{op}: scores must have shape ({n},) (one per box), got {tuple(scores.shape)}")
    if scores.dtype != boxes.dtype:
        raise TypeError(f"{op}: scores must have the dtype of boxes ({boxes.dtype}), got {scores.dtype}")
    tensors = {"boxes": boxes, "scores": scores}
    if groups is not None:
        if not isinstance(groups, torch.Tensor):
            raise TypeError(f"{op}: groups must be a torch.Tensor, got {type(groups).__name__}")
        if groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool:
            raise TypeError(
                f"{op}: groups must be an integer tensor (class or image ids), got {groups.dtype}"
            )
        if groups.dim() != 1 or groups.shape[0] != n:
            raise ValueError(f"{op}: groups must have shape ({n},) (one per box), got {tuple(groups.shape)}")
        tensors["groups"] = groups
        groups = groups.long()
    device = check_same_device(op, **tensors)
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise TypeError(
            f"{op}: iou_threshold must be a real number in [0, 1], got {type(iou_threshold).__name__}"
        )
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"{op}: iou_threshold must be in [0, 1], got {iou_threshold}")
    if max_output is not None or padded:
        if isinstance(max_output, bool) or not isinstance(max_output, numbers.Integral) or max_output < 0:
            raise ValueError(
                f"{op}: max_output must be an integer >= 0{'' if padded else ' or None'}, got {max_output!r}"
            )
    return device, groups


def _check_values(op: str, boxes: torch.Tensor, scores: torch.Tensor, *, padded: bool) -> None:
    """NaN/inf coordinates and NaN scores: a clear error (CUDA and reference paths)."""
    if padded and _skip_data_checks():
        return
    if boxes.numel() == 0 or bool(torch.isfinite(boxes).all() & ~torch.isnan(scores).any()):  # one sync
        return
    check_boxes(op, "boxes", boxes, finite=True)
    raise ValueError(f"{op}: scores contains NaN")


def _compiled(op: str, device: torch.device, boxes: torch.Tensor, scores: torch.Tensor, padded: bool, call):
    """Run the compiled op; the kernels check NaN/inf themselves, and their error is re-raised as the
    ValueError the Python check would give.

    CPU: one serial pass in the kernel (measured on 2 busy cores, `torch.isfinite(boxes).all()` over
    10k boxes took 60-80 ms of thread wake-up, 30x the whole NMS). CUDA: a status kernel on the
    device, read at the op's one sync (the output size); the padded ops never sync, so they check
    values only under the debug switch (:func:`retina_unet.ops.debug_checks`).
    """
    if device.type != "cpu" and debug_checks():
        _check_values(op, boxes, scores, padded=padded)
    try:
        return call()
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        if "contains NaN" in msg:
            raise ValueError(msg) from None
        raise


def _pad(keep: torch.Tensor, max_output: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((max_output,), -1, dtype=torch.int64, device=keep.device)
    out[: keep.shape[0]] = keep[:max_output]
    return out, torch.tensor(min(keep.shape[0], max_output), dtype=torch.int64, device=keep.device)


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_output: int | None = None
) -> torch.Tensor:
    """Greedy non-maximum suppression of 2D or 3D boxes.

    Args:
        boxes: ``Tensor[N, 4]`` (2D) or ``Tensor[N, 6]`` (3D), floating, finite.
        scores: ``Tensor[N]``, the dtype and device of ``boxes``, no NaN.
        iou_threshold: in [0, 1]; a box is suppressed by a kept box with IoU strictly greater.
        max_output: stop after this many kept boxes (None: no limit).

    Returns:
        ``Tensor[K]`` int64 indices into ``boxes`` of the kept boxes, by score descending (ties:
        lower index first), on the device of ``boxes``.
    """
    device, _ = _check("nms", boxes, scores, None, iou_threshold, max_output, padded=False)
    if dispatch("nms", device):
        _check_values("nms", boxes, scores, padded=False)
        return nms_reference(boxes, scores, float(iou_threshold), max_output)
    k = -1 if max_output is None else max_output
    return _compiled(
        "nms",
        device,
        boxes,
        scores,
        False,
        lambda: torch.ops.retina_unet.nms(boxes, scores, float(iou_threshold), k),
    )


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    max_output: int | None = None,
) -> torch.Tensor:
    """NMS within groups (class or image ids): boxes of different groups never suppress each other.

    Args:
        boxes: ``Tensor[N, 4]`` or ``Tensor[N, 6]``; scores: ``Tensor[N]`` (as for :func:`nms`).
        groups: ``Tensor[N]`` integer group ids (any values, negative included).
        iou_threshold: in [0, 1]. max_output: total number of kept boxes at most (None: no limit).

    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes of all groups, by score descending (ties: lower
        index first). No coordinate-offset trick: exact for any coordinates and dtypes.
    """
    device, groups = _check("batched_nms", boxes, scores, groups, iou_threshold, max_output, padded=False)
    if dispatch("batched_nms", device):
        _check_values("batched_nms", boxes, scores, padded=False)
        return batched_nms_reference(boxes, scores, groups, float(iou_threshold), max_output)
    k = -1 if max_output is None else max_output
    return _compiled(
        "batched_nms",
        device,
        boxes,
        scores,
        False,
        lambda: torch.ops.retina_unet.batched_nms(boxes, scores, groups, float(iou_threshold), k),
    )


def nms_padded(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_output: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nms` with a fixed output shape and no device synchronisation (CUDA graphs, export).

    Returns:
        ``(keep, num_kept)``: ``keep`` is ``Tensor[max_output]`` int64, the first ``num_kept`` entries
        equal ``nms(boxes, scores, iou_threshold, max_output)``, the rest are -1; ``num_kept`` is a
        0-d int64 tensor. On CUDA no NaN/inf check runs (it would synchronise) unless the debug
        switch is on (``RETINA_UNET_OPS_DEBUG=1``; never while a CUDA graph is captured or under
        torch.compile); the kernels then never crash but the result for such input is unspecified.
        The CPU always checks.
        Memory on CUDA: N * ceil(N / 64) * 8 bytes of masks.
    """
    device, _ = _check("nms_padded", boxes, scores, None, iou_threshold, max_output, padded=True)
    if dispatch("nms_padded", device):
        _check_values("nms_padded", boxes, scores, padded=True)
        return _pad(nms_reference(boxes, scores, float(iou_threshold), max_output), max_output)
    return _compiled(
        "nms_padded",
        device,
        boxes,
        scores,
        True,
        lambda: torch.ops.retina_unet.nms_padded(boxes, scores, float(iou_threshold), max_output),
    )


def batched_nms_padded(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float, max_output: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batched_nms` with a fixed output shape and no synchronisation; see :func:`nms_padded`."""
    device, groups = _check(
        "batched_nms_padded", boxes, scores, groups, iou_threshold, max_output, padded=True
    )
    if dispatch("batched_nms_padded", device):
        _check_values("batched_nms_padded", boxes, scores, padded=True)
        return _pad(
            batched_nms_reference(boxes, scores, groups, float(iou_threshold), max_output), max_output
        )
    return _compiled(
        "batched_nms_padded",
        device,
        boxes,
        scores,
        True,
        lambda: torch.ops.retina_unet.batched_nms_padded(
            boxes, scores, groups, float(iou_threshold), max_output
        ),
    )


# --- fake kernels (torch.compile, opcheck) ----------------------------------------------------------


def _register_fakes() -> None:
    if not build_info().available:
        return

    def _dynamic(boxes: torch.Tensor) -> torch.Tensor:
        torch._check(boxes.dim() == 2, lambda: "nms: boxes must be 2-d")
        k = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((k,), dtype=torch.int64)

    def _padded(boxes: torch.Tensor, max_output: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch._check(max_output >= 0, lambda: "nms_padded: max_output must be >= 0")
        return boxes.new_empty((max_output,), dtype=torch.int64), boxes.new_empty((), dtype=torch.int64)

    @torch.library.register_fake("retina_unet::nms")
    def _nms_fake(boxes, scores, iou_threshold, max_output=-1):
        return _dynamic(boxes)

    @torch.library.register_fake("retina_unet::batched_nms")
    def _batched_nms_fake(boxes, scores, groups, iou_threshold, max_output=-1):
        return _dynamic(boxes)

    @torch.library.register_fake("retina_unet::nms_padded")
    def _nms_padded_fake(boxes, scores, iou_threshold, max_output):
        return _padded(boxes, max_output)

    @torch.library.register_fake("retina_unet::batched_nms_padded")
    def _batched_nms_padded_fake(boxes, scores, groups, iou_threshold, max_output):
        return _padded(boxes, max_output)


_register_fakes()
