"""The compiled extension: what it reports about itself, and the errors when kernels are missing."""

from __future__ import annotations

import os

import pytest
import torch

import retina_unet
from retina_unet import _extension
from retina_unet.ops import _backend


def test_build_info_reports_the_build():
    info = retina_unet.build_info()
    assert info.available and info.error is None
    if os.environ.get("FORCE_CUDA") == "1":  # CI on a machine with nvcc: the CUDA sources must be in
        assert info.with_cuda and info.cuda_archs
    if info.with_cuda:
        assert all(a.replace(".", "").replace("+PTX", "").isdigit() for a in info.cuda_archs)
    for op in ("box_iou", "nms", "batched_nms", "nms_padded", "roi_align", "_roi_align_backward"):
        assert hasattr(torch.ops.retina_unet, op), op


def test_cuda_call_without_cuda_kernels_says_so(monkeypatch):
    monkeypatch.setattr(_extension, "build_info", lambda: _extension.BuildInfo(True, False, ()))
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        _extension.require_kernels("nms", torch.device("cuda"))
    assert _backend.backend_for("cuda") == "missing"


def test_missing_extension_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_extension, "build_info", lambda: _extension.BuildInfo(False, False, (), "ImportError: x"))
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation -e ."):
        _extension.require_kernels("roi_align", torch.device("cpu"))


def test_reference_backend_from_environment(monkeypatch):
    monkeypatch.setenv("RETINA_UNET_OPS", "reference")
    assert _backend.backend_for("cpu") == "reference"
    monkeypatch.delenv("RETINA_UNET_OPS")
    assert _backend.backend_for("cpu") == "compiled-cpu"
