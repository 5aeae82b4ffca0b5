"""Which implementation an op call uses: the compiled kernels or the pure-PyTorch reference.

Default: the compiled kernels, and a clear error at the call when they are missing for the
tensor's device (never a silent slow path). The reference is chosen explicitly, for a block of
code with :func:`reference_ops` or for a process with ``RETINA_UNET_OPS=reference`` (e.g. to run
on a machine without the extension, or to measure what the kernels buy end to end).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

from retina_unet._extension import has_kernels, require_kernels

_state = threading.local()


def use_reference() -> bool:
    """True when op calls on this thread should use the float64-capable pure-PyTorch reference."""
    forced = getattr(_state, "reference", None)
    if forced is not None:
        return forced
    return os.environ.get("RETINA_UNET_OPS", "").strip().lower() == "reference"


@contextlib.contextmanager
def reference_ops(enabled: bool = True) -> Iterator[None]:
    """Route every ``retina_unet.ops`` call in this block (this thread) to the reference ops."""
    previous = getattr(_state, "reference", None)
    _state.reference = enabled
    try:
        yield
    finally:
        _state.reference = previous


def backend_for(device: torch.device | str) -> str:
    """Name the implementation an op would use on ``device``.

    Returns "reference", "compiled-cpu", "compiled-cuda" or "missing" (a call would raise).
    """
    dev = torch.device(device)
    if use_reference():
        return "reference"
    if has_kernels(dev):
        return f"compiled-{dev.type}"
    return "missing"


def dispatch(op: str, device: torch.device) -> bool:
    """Return True to use the reference; otherwise make sure the compiled kernel exists (or raise).

    While torch.compile traces, the check is skipped (it was done eagerly before any real call, and
    the op's fake kernel stands in for it); the reference switch is read from the environment only.
    """
    if torch.compiler.is_compiling():
        return os.environ.get("RETINA_UNET_OPS", "").strip().lower() == "reference"
    if use_reference():
        return True
    require_kernels(op, device)
    return False


# --- CUDA kernel generation and debug value checks ------------------------------------------------

KERNEL_VERSIONS = ("v1", "v2")


def _parse_version(version: str | int) -> int:
    text = str(version).strip().lower()
    if text in ("1", "v1"):
        return 1
    if text in ("2", "v2"):
        return 2
    raise ValueError(f"set_kernel_version: version must be one of {KERNEL_VERSIONS}, got {version!r}")


def set_kernel_version(version: str | int) -> None:
    """Choose the generation of the CUDA kernels for this process: "v1" (default) or "v2".

    v1 are the kernels that have passed the CUDA tests and compute-sanitizer on a GPU; v2 are the
    rewritten RoIAlign (per-roi sample tables in shared memory) and NMS greedy pass (``removed`` in
    shared memory), opt-in until they have. Both give the same results (RoIAlign forward bitwise,
    NMS exactly); only the CUDA kernels differ, the CPU kernels are the same. The environment
    variable ``RETINA_UNET_KERNELS=v2`` sets it at import.
    """
    value = _parse_version(version)
    from retina_unet._extension import build_info

    if not build_info().available:
        raise RuntimeError("set_kernel_version: the compiled extension retina_unet._C is not available")
    torch.ops.retina_unet._set_kernel_version(value)


def kernel_version() -> str:
    """The CUDA kernel generation in use: "v1" or "v2" (see :func:`set_kernel_version`)."""
    from retina_unet._extension import build_info

    if not build_info().available:
        return "v1"
    return f"v{int(torch.ops.retina_unet._kernel_version())}"


@contextlib.contextmanager
def kernel_version_set(version: str | int) -> Iterator[None]:
    """Use CUDA kernel generation ``version`` inside the block (process-wide), then restore."""
    previous = kernel_version()
    set_kernel_version(version)
    try:
        yield
    finally:
        set_kernel_version(previous)


def _apply_env_kernel_version() -> None:
    """Apply ``RETINA_UNET_KERNELS`` (checked even without the extension, which it then cannot affect)."""
    value = os.environ.get("RETINA_UNET_KERNELS", "").strip()
    if not value:
        return
    _parse_version(value)
    from retina_unet._extension import build_info

    if build_info().available:
        set_kernel_version(value)


def debug_checks() -> bool:
    """True when the ops also run value checks that synchronise a CUDA device.

    On CUDA the hot path never reads tensor values on the host: ``roi_align`` batch indices are not
    checked (invalid ones give zeros), the exact-size NMS ops check NaN/inf on the device and report
    it at the one sync they need anyway, and the padded NMS ops do not check. With
    ``RETINA_UNET_OPS_DEBUG=1`` (or :func:`debug_value_checks`) the CUDA calls check values like the
    CPU ones (one sync each). The CPU always checks.
    """
    forced = getattr(_state, "debug", None)
    if forced is not None:
        return forced
    return os.environ.get("RETINA_UNET_OPS_DEBUG", "").strip() not in ("", "0")


@contextlib.contextmanager
def debug_value_checks(enabled: bool = True) -> Iterator[None]:
    """Turn the synchronising CUDA value checks on (or off) for this block, on this thread."""
    previous = getattr(_state, "debug", None)
    _state.debug = enabled
    try:
        yield
    finally:
        _state.debug = previous
