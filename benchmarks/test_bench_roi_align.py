"""RoIAlign benchmarks: ours vs torchvision (2D), the grid_sample formulation and the reference (3D).

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_roi_align.py --benchmark-only
--benchmark-json=reports/kernels/bench_roi_align_cpu.json``. Groups are named per workload
(``roi_align_<fwd|fwdbwd>|D=..|K=..|C=..|out=..|<device>``) and ``extra_info["impl"]`` names the
implementation ("ours", "torchvision", "grid_sample", "reference"), so rivals sit side by side.
CUDA timings synchronise inside the timed call; CUDA runs also record kernel time and the
environment (benchmarks/cuda_timing.py) and check the result once against our CPU kernel. The 3D workloads use ``sampling_ratio=2`` so that
``grid_sample`` needs a single call per image (its best case; adaptive grids would split it into one
call per distinct grid).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.cuda_timing import annotate, check_close, record_device_times
from retina_unet.ops import roi_align
from retina_unet.ops.reference import roi_align_grid_sample, roi_align_reference

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU"))]

# (D, N, C, spatial sizes (array order), K, output size, sampling ratio); paper-like 3D: Retina U-Net's
# Mask R-CNN head pools 7x7x3 from stride-4 features of 256x256x128 inputs (here a crop of them).
WORKLOADS = {
    "2d": (2, 2, 64, (64, 64), 512, (7, 7), -1),
    "3d": (3, 2, 36, (64, 64, 32), 256, (7, 7, 3), 2),
}


def _rois(d, n, sizes, k, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor(sizes, dtype=torch.float64)
    ext = (0.05 + 0.2 * torch.rand(k, d, generator=g, dtype=torch.float64)) * size
    lo = torch.rand(k, d, generator=g, dtype=torch.float64) * (size - ext)
    b = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([b, lo, lo + ext], 1).to(device, dtype)


def _setup(name, device):
    d, n, c, sizes, k, out, sr = WORKLOADS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, *sizes, generator=g).to(device)
    rois = _rois(d, n, sizes, k, torch.float32, device)
    grad = torch.randn(k, c, *out, generator=g).to(device)
    group_tail = f"D={d}|K={k}|C={c}|out={'x'.join(map(str, out))}|{device}"
    return x, rois, grad, out, sr, group_tail


def _impl(impl):
    if impl == "ours":
        return roi_align
    if impl == "grid_sample":
        return roi_align_grid_sample
    if impl == "reference":
        return roi_align_reference
    return pytest.importorskip("torchvision").ops.roi_align  # takes (b, x1, y1, x2, y2) rois


def _run(benchmark, name, impl, device, backward):
    x, rois, grad, out, sr, tail = _setup(name, device)
    fn = _impl(impl)
    if impl == "torchvision":
        rois = rois[:, [0, 2, 1, 4, 3]].contiguous()  # convert once, outside the timed call
    xg = x.requires_grad_(backward)

    def call():
        xg.grad = None
        y = fn(xg, rois, out, 1.0, sr, True)
        if backward:
            y.backward(grad.to(y.dtype))
        if device == "cuda":
            torch.cuda.synchronize()
        return y

    benchmark.group = f"roi_align_{'fwdbwd' if backward else 'fwd'}|{tail}"
    benchmark.extra_info["impl"] = impl
    annotate(benchmark, device)
    if device == "cuda":
        # Once, outside the timed loop: the value (and gradient) against our CPU kernel, so that a
        # fast wrong kernel fails here (torchvision's 2D values equal ours up to float rounding).
        y = call()
        xc = x.detach().cpu().requires_grad_(backward)
        want = roi_align(xc, rois.cpu() if impl != "torchvision" else _setup(name, "cpu")[1], out, 1.0, sr, True)
        check_close(benchmark.group + "|" + impl, y, want, 1e-4)
        if backward:
            want.backward(grad.cpu())
            check_close(benchmark.group + "|" + impl + "|grad", xg.grad, xc.grad, 1e-3)
        record_device_times(benchmark, call, device)
    rounds = 20 if device == "cuda" else 3
    benchmark.pedantic(call, rounds=rounds, warmup_rounds=2 if device == "cuda" else 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwdbwd"])
@pytest.mark.parametrize("impl", ["ours", "torchvision"])
def test_roi_align_2d(benchmark, impl, backward, device):
    _run(benchmark, "2d", impl, device, backward)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwdbwd"])
@pytest.mark.parametrize("impl", ["ours", "grid_sample"])
def test_roi_align_3d(benchmark, impl, backward, device):
    _run(benchmark, "3d", impl, device, backward)
