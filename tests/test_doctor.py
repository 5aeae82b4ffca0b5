"""`retina-unet doctor` on a CPU-only machine (and whatever this machine is)."""

from __future__ import annotations

import json

import pytest
import torch

from retina_unet import _extension, cli


def test_doctor_reports_this_machine(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    info = _extension.build_info()
    assert report["torch"] == torch.__version__
    assert report["extension"] == {"built": True, "with_cuda": info.with_cuda, "cuda_archs": list(info.cuda_archs),
                                   "error": None}
    assert report["backends"]["nms"]["cpu"] == "compiled-cpu"
    if not torch.cuda.is_available():
        assert report["gpus"] == [] and report["cuda_available"] is False
        expected = "compiled-cuda" if info.with_cuda else "missing"
        assert report["backends"]["roi_align"]["cuda (no device here)"] == expected


def test_doctor_require_cuda_fails_without_a_gpu(capsys):
    rc = cli.main(["doctor", "--require-cuda"])
    out = capsys.readouterr()
    if torch.cuda.is_available() and _extension.build_info().with_cuda:
        assert rc == 0
    else:
        assert rc == 1 and "missing: a CUDA device" in out.err
    assert "backend per op and device" in out.out


def test_doctor_without_extension(monkeypatch, capsys):
    from retina_unet import doctor

    broken = _extension.BuildInfo(False, False, (), "ImportError: no _C")
    monkeypatch.setattr(doctor, "build_info", lambda: broken)
    monkeypatch.setattr(_extension, "build_info", lambda: broken)
    assert cli.main(["doctor", "--require-kernels"]) == 1
    out = capsys.readouterr()
    assert "NOT built (ImportError: no _C)" in out.out and "cpu: missing" in out.out


@pytest.mark.parametrize("built,gpu,runs", [
    ("9.0", "9.0", True), ("9.0a", "9.0", True), ("10.0f", "10.0", True), ("8.0", "9.0", False),
    ("8.0+PTX", "9.0", True), ("9.0+PTX", "8.0", False), ("garbage", "9.0", False),
])
def test_arch_runs_on(built, gpu, runs):
    from retina_unet.doctor import arch_runs_on

    assert arch_runs_on(built, gpu) is runs


@pytest.mark.parametrize("cuda_available,built,with_cuda,expected", [
    (False, True, True, ["a CUDA device (none visible to torch)"]),
    (True, True, False, ["CUDA kernels in retina_unet._C (it was built with the C++ CPU kernels only)"]),
    (False, False, False, ["a CUDA device (none visible to torch)",
                           "the compiled extension retina_unet._C (not built)"]),
    (True, True, True, []),
])
def test_require_cuda_names_only_what_is_missing(cuda_available, built, with_cuda, expected):
    """Kernels that are built are never reported missing (the line under "CUDA kernels: yes")."""
    from retina_unet.doctor import cuda_missing

    report = {"cuda_available": cuda_available, "extension": {"built": built, "with_cuda": with_cuda}}
    assert cuda_missing(report) == expected
