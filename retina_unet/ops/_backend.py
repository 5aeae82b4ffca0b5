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
