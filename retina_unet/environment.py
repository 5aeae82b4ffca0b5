"""Where and with what code a result was produced (git commit, library versions, host, compiled-ops
build), which device a run uses and in what precision it computes. The one ``git_commit`` of the
project."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

_REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD of the repository at ``cwd`` (default: the one holding this package), with "-dirty" when
    tracked files changed; None outside git."""
    cwd = _REPO if cwd is None else cwd
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) -> cuda when available, else cpu; any other name as ``torch.device``."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX), as PyTorch checks
    it. Without it oneDNN would emulate bfloat16, which is not expected to pay (not measured: no such
    CPU was at hand), so :func:`autocast_for` keeps such a CPU at float32 (check, don't assume: the
    2-core machines this project runs on differ, some AVX2 only)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN or without the check
        return False


def autocast_for(device: torch.device, cuda_amp: bool, cpu_bf16: bool):
    """The mixed-precision context of a run on ``device``: bfloat16 autocast on CUDA when
    ``cuda_amp``, on the CPU when ``cpu_bf16`` and :func:`cpu_has_native_bf16`; otherwise a no-op
    (float32). :func:`precision_of` names what it does, for the result file."""
    if device.type == "cuda" and cuda_amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16 and cpu_has_native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_of(device: torch.device, cuda_amp: bool, cpu_bf16: bool) -> str:
    """``"bfloat16-autocast"`` or ``"float32"``: what :func:`autocast_for` does with these settings
    on this machine (a run asking for ``cpu_bf16`` on a CPU without native bfloat16 computes float32)."""
    active = isinstance(autocast_for(device, cuda_amp, cpu_bf16), torch.autocast)
    return "bfloat16-autocast" if active else "float32"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else ``platform.processor()``: seeded runs are
    bit-reproducible on the same CPU and software, not across CPUs, so results name it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """JSON-ready description of the software and machine (for checkpoints and results)."""
    from retina_unet import __version__, build_info

    cuda = torch.cuda.is_available()
    return {
        "retina_unet": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "numpy": np.__version__,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "build_info": dataclasses.asdict(build_info()),
    }
