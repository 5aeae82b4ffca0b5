"""The CUDA kernel generation switch (retina_unet.ops.set_kernel_version) and the v2 kernels.

v2 kernels (RoIAlign per-roi sample tables in shared memory, NMS greedy pass with ``removed`` in
shared memory) stay opt-in until these CUDA tests and compute-sanitizer pass on a GPU
(benchmarks/gpu_check.sh runs both). They must give the v1 results: RoIAlign forward bitwise, NMS
exactly, the atomic backward to float rounding.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from retina_unet import ops
from retina_unet.ops import batched_nms, batched_nms_padded, nms, nms_padded, roi_align
from retina_unet.ops.reference import batched_nms_reference, nms_reference
from tests.test_nms import random_boxes
from tests.test_roi_align import SIZES, random_input, random_rois

VERSIONS = ["v1", "v2"]


def test_switch_sets_reads_and_restores():
    assert ops.kernel_version() == "v1"  # the default until v2 has passed on a GPU
    with ops.kernel_version_set("v2"):
        assert ops.kernel_version() == "v2"
        assert torch.ops.retina_unet._kernel_version() == 2
    assert ops.kernel_version() == "v1"
    with pytest.raises(ValueError, match="version must be one of"):
        ops.set_kernel_version("v3")
    with pytest.raises(RuntimeError, match="must be 1 or 2"):
        torch.ops.retina_unet._set_kernel_version(0)


def test_environment_variable_selects_version():
    code = "import retina_unet.ops as o; print(o.kernel_version())"
    env = {"RETINA_UNET_KERNELS": "v2"}
    import os

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "v2"
    bad = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RETINA_UNET_KERNELS": "fast"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "version must be one of" in bad.stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_cpu_results_do_not_depend_on_the_switch(version):
    boxes, scores = random_boxes(300, 3, 4)
    x = random_input(2, 5)
    rois = random_rois(20, 2, 2, SIZES[2], 6)
    with ops.kernel_version_set("v1"):
        want = nms(boxes, scores, 0.4), roi_align(x, rois, 3)
    with ops.kernel_version_set(version):
        assert torch.equal(nms(boxes, scores, 0.4), want[0])
        assert torch.equal(roi_align(x, rois, 3), want[1])


# --- CUDA: v2 equals v1 and the CPU -----------------------------------------------------------------


def _rois_with_edge_cases(k: int, d: int, n: int, seed: int, dtype) -> torch.Tensor:
    rois = random_rois(k, d, n, SIZES[d], seed).to(dtype)
    rois[1, 1] = float("nan")  # non-finite roi: zeros
    rois[2, 0] = n + 3  # invalid batch index: zeros on CUDA
    rois[3, 1:] = torch.tensor([-1e4] * d + [1e4] * d, dtype=dtype)  # giant: v2 falls back to v1 per roi
    rois[4, 1 + d:] = rois[4, 1:1 + d]  # zero extent
    return rois


@pytest.mark.cuda
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_v2_forward_bitwise_equals_v1(d, dtype, sampling_ratio, aligned):
    x = random_input(d, 11, n=2, c=5).to(dtype).cuda()
    rois = _rois_with_edge_cases(60, d, 2, 12, dtype).cuda()
    with ops.kernel_version_set("v1"):
        want = torch.ops.retina_unet.roi_align(x, rois, 0.75, [3] * d, sampling_ratio, aligned)
    with ops.kernel_version_set("v2"):
        got = torch.ops.retina_unet.roi_align(x, rois, 0.75, [3] * d, sampling_ratio, aligned)
    assert torch.equal(got, want)
    cpu_rois = rois.cpu()
    cpu_rois[2, 0] = 0  # the CPU rejects invalid batch indices; compare the rest
    ref = torch.ops.retina_unet.roi_align(x.cpu(), cpu_rois, 0.75, [3] * d, sampling_ratio, aligned)
    mask = torch.ones(60, dtype=torch.bool)
    mask[2] = False
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
    torch.testing.assert_close(got.cpu()[mask].double(), ref[mask].double(), rtol=0, atol=tol)


@pytest.mark.cuda
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_roi_align_v2_backward_equals_v1_and_cpu(d, dtype):
    x = random_input(d, 13, n=2, c=4).to(dtype)
    rois = random_rois(50, d, 2, SIZES[d], 14).to(dtype)
    g = torch.randn(50, 4, *[4] * d, dtype=dtype)
    ref = torch.ops.retina_unet._roi_align_backward(g, rois, 1.0, [4] * d, -1, True, list(x.shape))
    for version in VERSIONS:
        with ops.kernel_version_set(version):
            got = torch.ops.retina_unet._roi_align_backward(g.cuda(), rois.cuda(), 1.0, [4] * d, -1, True,
                                                            list(x.shape))
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=tol, msg=version)


@pytest.mark.cuda
def test_roi_align_v2_large_shapes_equal_v1():
    # The benchmark shapes: K=512, C=64, 7x7 (2D) and K=256, C=36, 7x7x3 (3D): many chunks per roi.
    for d, shape, k, out in ((2, (2, 64, 50, 60), 512, [7, 7]), (3, (2, 36, 24, 24, 16), 256, [7, 7, 3])):
        gen = torch.Generator().manual_seed(d)
        x = torch.randn(*shape, generator=gen).cuda()
        rois = random_rois(k, d, 2, shape[2:], 15, max_extent=20.0).float().cuda()
        with ops.kernel_version_set("v1"):
            want = roi_align(x, rois, out, 0.5, -1, True)
        with ops.kernel_version_set("v2"):
            got = roi_align(x, rois, out, 0.5, -1, True)
        assert torch.equal(got, want)


@pytest.mark.cuda
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 4095, 4096, 4097])
def test_nms_versions_equal_reference(version, d, n):
    boxes, scores = random_boxes(n, d, 30 + n, side=60.0)
    scores = (scores * 8).round() / 8  # ties
    groups = torch.arange(n) % 3
    want = nms_reference(boxes, scores, 0.3)
    bwant = batched_nms_reference(boxes, scores, groups, 0.3, 50)
    bc, sc, gc = boxes.cuda(), scores.cuda(), groups.cuda()
    with ops.kernel_version_set(version):
        assert torch.equal(nms(bc, sc, 0.3).cpu(), want)
        assert torch.equal(batched_nms(bc, sc, gc, 0.3, 50).cpu(), bwant)
        keep, num = nms_padded(bc, sc, 0.3, 40)
        assert int(num) == min(40, len(want)) and torch.equal(keep[: int(num)].cpu(), want[:40])
        bkeep, bnum = batched_nms_padded(bc, sc, gc, 0.3, 50)
        assert int(bnum) == len(bwant) and torch.equal(bkeep[: int(bnum)].cpu(), bwant)


@pytest.mark.cuda
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("n", [376_832, 400_000])
def test_nms_removed_bitset_at_and_beyond_shared_memory(version, n):
    # v2 keeps 5,888 words (blocks of 64 candidates) in shared memory: 376,832 candidates use all of
    # it (the largest launch), 400,000 (6,250 blocks) the global-memory fallback. 100 groups.
    boxes, scores = random_boxes(n, 2, 41, side=3000.0, dtype=torch.float32)
    groups = torch.arange(n) % 100
    want = batched_nms(boxes, scores, groups, 0.5)  # CPU kernel
    with ops.kernel_version_set(version):
        got = batched_nms(boxes.cuda(), scores.cuda(), groups.cuda(), 0.5)
    assert torch.equal(got.cpu(), want)


@pytest.mark.cuda
@pytest.mark.parametrize("version", VERSIONS)
def test_nms_nan_is_reported_at_the_one_sync(version):
    boxes, scores = random_boxes(100, 2, 3, dtype=torch.float32, device="cuda")
    bad = boxes.clone()
    bad[7, 2] = float("nan")
    with ops.kernel_version_set(version):
        with pytest.raises(ValueError, match="boxes contains NaN"):
            nms(bad, scores, 0.5)
        s = scores.clone()
        s[3] = float("nan")
        with pytest.raises(ValueError, match="scores contains NaN"):
            batched_nms(boxes, s, torch.zeros(100, dtype=torch.int64, device="cuda"), 0.5)


# --- the debug switch for value checks that would synchronise ---------------------------------------


def test_debug_switch_reads_environment_and_context(monkeypatch):
    monkeypatch.delenv("RETINA_UNET_OPS_DEBUG", raising=False)
    assert not ops.debug_checks()
    monkeypatch.setenv("RETINA_UNET_OPS_DEBUG", "1")
    assert ops.debug_checks()
    with ops.debug_value_checks(False):
        assert not ops.debug_checks()
    monkeypatch.setenv("RETINA_UNET_OPS_DEBUG", "0")
    assert not ops.debug_checks()


def test_cpu_always_checks_values():
    x = random_input(2, 1)
    bad = torch.tensor([[5.0, 0, 0, 2, 2]], dtype=torch.float64)
    with ops.debug_value_checks(False):
        with pytest.raises(ValueError, match="batch index"):
            roi_align(x, bad, 2)
        with pytest.raises(ValueError, match="NaN"):
            ops.box_iou(torch.tensor([[0.0, 0, float("nan"), 1]]), torch.zeros(1, 4))
        with pytest.raises(ValueError, match="NaN"):
            nms_padded(torch.tensor([[0.0, 0, float("nan"), 1]]), torch.zeros(1), 0.5, 3)


@pytest.mark.cuda
def test_cuda_value_checks_only_under_debug_switch():
    x = random_input(2, 1).cuda()
    bad = torch.tensor([[5.0, 0, 0, 2, 2]], dtype=torch.float64, device="cuda")
    nan_boxes = torch.tensor([[0.0, 0, float("nan"), 1]], device="cuda")
    with ops.debug_value_checks(False):
        assert torch.equal(roi_align(x, bad, 2), torch.zeros(1, 3, 2, 2, dtype=torch.float64, device="cuda"))
        nms_padded(nan_boxes, torch.zeros(1, device="cuda"), 0.5, 3)  # no check, no sync, no crash
    with ops.debug_value_checks(True):
        with pytest.raises(ValueError, match="batch index"):
            roi_align(x, bad, 2)
        with pytest.raises(ValueError, match="NaN"):
            nms_padded(nan_boxes, torch.zeros(1, device="cuda"), 0.5, 3)
        with pytest.raises(ValueError, match="NaN"):
            ops.box_iou(nan_boxes, nan_boxes)
