"""What every CUDA kernel benchmark records besides pytest-benchmark's whole-call time.

- ``device_span_ms``: median CUDA-event time from before the call's first launch to after its last
  (device time including gaps where the GPU waits for the host);
- ``kernel_ms``: the sum of the durations of the CUDA kernels and copies one call launches
  (torch.profiler), i.e. the time the kernels themselves take; whole-call minus this is host cost;
- the GPU name, torch, torchvision versions and the CUDA kernel generation (``RETINA_UNET_KERNELS``).

``check_close`` compares a result with a peer's or with our verified CPU kernel once, outside the
timed loop, so that a fast but wrong kernel fails the benchmark instead of winning it.
"""

from __future__ import annotations

import statistics

import torch


def annotate(benchmark, device: str) -> None:
    """Record the environment in ``benchmark.extra_info``."""
    from retina_unet.ops import kernel_version

    info = benchmark.extra_info
    info["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    info["torch"] = torch.__version__
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a benchmark dependency
        info["torchvision"] = None
    info["kernels"] = kernel_version()
    info["threads"] = torch.get_num_threads()


def _kernel_us(prof) -> float:
    total = 0.0
    for e in prof.events():
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA:
            total += float(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0) or 0.0)
    return total


def record_device_times(benchmark, fn, device: str, iters: int = 10) -> None:
    """On CUDA, add ``device_span_ms`` and ``kernel_ms`` (per call) to ``benchmark.extra_info``."""
    if device != "cuda":
        return
    fn()
    torch.cuda.synchronize()
    spans = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        spans.append(start.elapsed_time(end))
    benchmark.extra_info["device_span_ms"] = statistics.median(spans)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    benchmark.extra_info["kernel_ms"] = _kernel_us(prof) / 1000.0 / iters


def check_equal(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """Exact equality (NMS indices) or an AssertionError naming the benchmark."""
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape or not torch.equal(got, want):
        raise AssertionError(f"{name}: result differs from the check ({tuple(got.shape)} vs {tuple(want.shape)})")


def check_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    """Closeness within ``atol`` (RoIAlign values and gradients) or an AssertionError."""
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    err = float((got - want).abs().max()) if got.numel() else 0.0
    if err > atol:
        raise AssertionError(f"{name}: max abs difference {err:.3g} > {atol:.3g}")
