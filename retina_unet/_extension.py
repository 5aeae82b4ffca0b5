"""Loading the compiled op library ``retina_unet._C`` and reporting what it was built with.

The library registers the ``torch.ops.retina_unet`` namespace. If it is missing (not built), the
ops fall back to nothing silently: :func:`require_kernels` raises an actionable error at the call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

_BUILD_HINT = "build it with `pip install --no-build-isolation -e .` (or `make build`) in the repository root"


@functools.lru_cache(maxsize=1)
def _load() -> str | None:
    """Import the extension once; return the import error message, or None on success."""
    try:
        from retina_unet import _C  # noqa: F401  (loading the library runs its registrations)
    except (ImportError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class BuildInfo:
    """What ``retina_unet._C`` was built with."""

    available: bool
    with_cuda: bool
    cuda_archs: tuple[str, ...]
    error: str | None = None


@functools.lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    """Return whether the compiled kernels exist and whether they include CUDA kernels."""
    err = _load()
    if err is not None:
        return BuildInfo(False, False, (), err)
    fields = dict(kv.split("=", 1) for kv in torch.ops.retina_unet._build_info().split(";"))
    archs = tuple(a for a in fields.get("cuda_archs", "").replace(",", ";").split(";") if a)
    return BuildInfo(True, fields.get("with_cuda") == "1", archs, None)


def has_kernels(device: torch.device | str = "cpu") -> bool:
    """True when a compiled kernel exists for tensors on ``device``."""
    info = build_info()
    dev = torch.device(device)
    if not info.available:
        return False
    if dev.type == "cuda":
        return info.with_cuda
    return dev.type == "cpu"


def require_kernels(op: str, device: torch.device) -> None:
    """Raise a clear error when ``op`` has no compiled kernel for ``device``."""
    info = build_info()
    if not info.available:
        raise RuntimeError(
            f"retina_unet.ops.{op}: the compiled extension retina_unet._C is not available "
            f"({info.error}); {_BUILD_HINT}."
        )
    if device.type == "cuda" and not info.with_cuda:
        raise RuntimeError(
            f"retina_unet.ops.{op}: got a CUDA tensor but retina_unet._C was built without CUDA kernels; "
            f"rebuild on a machine with nvcc and a CUDA build of torch (FORCE_CUDA=1 makes a missing "
            f"toolkit a hard error), or move the inputs to the CPU."
        )
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"retina_unet.ops.{op}: no kernel for device type {device.type!r} (cpu and cuda only)")
