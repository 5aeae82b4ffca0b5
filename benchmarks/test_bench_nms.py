"""NMS kernel benchmarks: ours beside torchvision (2D), MONAI (3D) and the float64 reference.

Run: .venv/bin/python -m pytest benchmarks/test_bench_nms.py --benchmark-only --benchmark-json=/tmp/nms.json
Groups are "op|D=..|N=..|kind[|G=..]|device"; benchmark.extra_info["impl"] names the implementation
("ours", "torchvision", "monai", "reference"), so a report script can key on (group, impl).
CUDA variants are skipped without a GPU and synchronise inside the timed call. IoU threshold 0.5.
CUDA runs also record the kernel time and the environment (benchmarks/cuda_timing.py), and check
our CUDA result against our CPU kernel once, outside the timed loop.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.box_workloads import make_workload
from benchmarks.cuda_timing import annotate, check_equal, record_device_times
from retina_unet.ops import batched_nms, nms, to_torchvision
from retina_unet.ops.reference import batched_nms_reference, nms_reference

T = 0.5
HAS_CUDA = torch.cuda.is_available()
CUDA = pytest.param(
    "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]
)
DEVICES = ["cpu", CUDA]
KINDS = ["sparse", "clustered"]


def _timed(fn, device):
    if device == "cuda":

        def run():
            out = fn()
            torch.cuda.synchronize()
            return out

        return run
    return fn


def _bench(benchmark, group, impl, fn, device, *, slow=False, check=None):
    """Time ``fn``. ``check`` (CUDA, ours): a function giving the expected indices, compared once
    outside the timed loop (our CPU kernel, whose decisions the CUDA kernel must reproduce)."""
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    annotate(benchmark, device)
    run = _timed(fn, device)
    if slow:  # peers that take seconds per call
        return benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    out = run()  # warm-up (CUDA context, caches)
    if check is not None and device == "cuda":
        check_equal(group, out, check())
    record_device_times(benchmark, fn, device)
    return benchmark(run)


def _torchvision():
    return pytest.importorskip("torchvision")


# --- nms, 2D ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1000, 10000])
@pytest.mark.parametrize("impl", ["ours", "torchvision", "reference"])
def test_nms_2d(benchmark, device, kind, n, impl):
    boxes, scores, _ = make_workload(kind, n, 2, device=device)
    group = f"nms|D=2|N={n}|{kind}|{device}"
    if impl == "ours":
        out = _bench(benchmark, group, impl, lambda: nms(boxes, scores, T), device,
                     check=lambda: nms(boxes.cpu(), scores.cpu(), T))
    elif impl == "torchvision":
        tv, tvb = _torchvision(), to_torchvision(boxes).contiguous()
        out = _bench(benchmark, group, impl, lambda: tv.ops.nms(tvb, scores, T), device)
    else:
        if device == "cuda":
            pytest.skip("the reference is a CPU oracle")
        out = _bench(benchmark, group, impl, lambda: nms_reference(boxes, scores, T), device, slow=n > 1000)
    benchmark.extra_info["kept"] = int(out.numel())


# --- nms, 3D ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1000, 5000, 10000])
@pytest.mark.parametrize("impl", ["ours", "monai", "reference"])
def test_nms_3d(benchmark, device, kind, n, impl):
    if n == 10000 and (device == "cpu" or impl != "ours"):
        pytest.skip("N=10000 in 3D: ours on CUDA only (3D vs 2D at equal N)")
    if impl == "reference" and (device == "cuda" or n > 1000):
        pytest.skip("the reference is a CPU oracle, timed at N=1000 only")
    if impl == "monai" and device == "cuda" and n > 1000:
        pytest.skip("MONAI on CUDA: one sync per kept box, timed at N=1000 only")
    boxes, scores, _ = make_workload(kind, n, 3, device=device)
    group = f"nms|D=3|N={n}|{kind}|{device}"
    if impl == "ours":
        out = _bench(benchmark, group, impl, lambda: nms(boxes, scores, T), device,
                     check=lambda: nms(boxes.cpu(), scores.cpu(), T))
    elif impl == "monai":
        box_utils = pytest.importorskip("monai.data.box_utils")
        out = _bench(
            benchmark,
            group,
            impl,
            lambda: box_utils.non_max_suppression(boxes, scores, T),
            device,
            slow=n > 1000,
        )
    else:
        out = _bench(benchmark, group, impl, lambda: nms_reference(boxes, scores, T), device, slow=True)
    benchmark.extra_info["kept"] = int(out.numel())


# --- batched_nms ------------------------------------------------------------------------------------

BATCHED = [
    pytest.param("cpu", 2, 10000, 20, id="cpu-D2-N10000-G20"),
    pytest.param("cpu", 3, 5000, 20, id="cpu-D3-N5000-G20"),
    pytest.param(*CUDA.values, 2, 10000, 10, id="cuda-D2-N10000-G10", marks=CUDA.marks),
    pytest.param(*CUDA.values, 2, 100000, 80, id="cuda-D2-N100000-G80", marks=CUDA.marks),
    pytest.param(*CUDA.values, 2, 100000, 10, id="cuda-D2-N100000-G10", marks=CUDA.marks),
    pytest.param(*CUDA.values, 3, 100000, 80, id="cuda-D3-N100000-G80", marks=CUDA.marks),
]


@pytest.mark.parametrize("device,d,n,n_groups", BATCHED)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ["ours", "torchvision", "reference"])
def test_batched_nms(benchmark, device, d, n, n_groups, kind, impl):
    if impl == "torchvision" and d != 2:
        pytest.skip("torchvision is 2D only")
    if impl == "reference" and device == "cuda":
        pytest.skip("the reference is a CPU oracle")
    boxes, scores, groups = make_workload(kind, n, d, n_groups=n_groups, device=device)
    group = f"batched_nms|D={d}|N={n}|{kind}|G={n_groups}|{device}"
    if impl == "ours":
        out = _bench(benchmark, group, impl, lambda: batched_nms(boxes, scores, groups, T), device,
                     check=lambda: batched_nms(boxes.cpu(), scores.cpu(), groups.cpu(), T))
    elif impl == "torchvision":
        tv, tvb = _torchvision(), to_torchvision(boxes).contiguous()
        out = _bench(benchmark, group, impl, lambda: tv.ops.batched_nms(tvb, scores, groups, T), device)
    else:
        out = _bench(
            benchmark, group, impl, lambda: batched_nms_reference(boxes, scores, groups, T), device, slow=True
        )
    benchmark.extra_info["kept"] = int(out.numel())
