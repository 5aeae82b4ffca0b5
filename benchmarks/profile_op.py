"""Profile one op at one size: a torch.profiler Chrome trace and a per-kernel table.

    python -m benchmarks.profile_op --op nms --dim 3 --size 5000 --device cpu --out reports/profile
    python -m benchmarks.profile_op --op roi_align --dim 3 --size 256 --device cuda --ncu --out OUT
    python -m benchmarks.profile_op --op roi_align_backward --dim 2 --bench-shape --kernels v2 --device cuda
    python -m benchmarks.profile_op --op batched_nms --dim 2 --size 100000 --groups 80 --device cuda

``--bench-shape`` takes the RoIAlign workload of the kernel benchmarks (benchmarks/test_bench_roi_align.py
WORKLOADS: 2D K=512, C=64, 64x64, 7x7; 3D K=256, C=36, 64x64x32, 7x7x3, sampling ratio 2) instead of
``--size``; ``--groups`` sets the batched NMS group count (the benchmarks use 10, 20 and 80);
``--kernels`` the CUDA kernel generation.

Writes ``<op>_D<dim>_<size>_<device>.trace.json`` (open in chrome://tracing or Perfetto) and
``....table.txt`` (self time per kernel/operator). ``--ncu`` (GPU machines) also runs the same
workload under Nsight Compute and writes ``....ncu-rep`` plus a text summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.box_workloads import make_workload
from retina_unet import ops

OPS = ("box_iou", "nms", "batched_nms", "roi_align", "roi_align_backward")


def build_call(op: str, dim: int, size: int, device: str, dist: str, *, groups: int = 20,
               bench_shape: bool = False):
    """Return a no-argument callable running ``op`` once on a seeded workload of ``size`` (or, for
    RoIAlign with ``bench_shape``, on the kernel benchmark's workload)."""
    if op in ("box_iou", "nms", "batched_nms"):
        boxes, scores, groups = make_workload(dist, size, dim, n_groups=groups if op == "batched_nms" else 0,
                                              device=device)
        if op == "box_iou":
            return lambda: ops.box_iou(boxes, boxes)
        if op == "nms":
            return lambda: ops.nms(boxes, scores, 0.5)
        return lambda: ops.batched_nms(boxes, scores, groups, 0.5)
    if bench_shape:
        from benchmarks.test_bench_roi_align import _setup

        x, rois, grad, out, sr, _ = _setup(f"{dim}d", device)
        if op == "roi_align":
            return lambda: ops.roi_align(x, rois, out, 1.0, sr, True)
        xb = x.clone().requires_grad_()

        def bench_fwd_bwd():
            ops.roi_align(xb, rois, out, 1.0, sr, True).backward(grad)

        return bench_fwd_bwd
    # RoIAlign: paper-like FPN level features; `size` rois of object size.
    g = torch.Generator().manual_seed(0)
    spatial = (64, 64) if dim == 2 else (32, 64, 64)
    channels = 192 if dim == 2 else 36
    x = torch.randn((2, channels, *spatial), generator=g).to(device)
    lo = torch.rand(size, dim, generator=g) * (torch.tensor(spatial) - 12)
    rois = torch.cat([torch.randint(0, 2, (size, 1), generator=g).float(), lo, lo + 4 + 8 * torch.rand(size, dim, generator=g)], 1)
    rois = rois.to(device)
    out = (7, 7) if dim == 2 else (7, 7, 3)
    if op == "roi_align":
        return lambda: ops.roi_align(x, rois, out, 1.0, -1, True)
    xg = x.clone().requires_grad_()

    def fwd_bwd():
        y = ops.roi_align(xg, rois, out, 1.0, -1, True)
        y.backward(torch.ones_like(y))

    return fwd_bwd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_op", description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=OPS, required=True)
    p.add_argument("--dim", type=int, choices=(2, 3), default=3)
    p.add_argument("--size", type=int, default=5000, help="N boxes (NMS, box_iou) or K rois (RoIAlign)")
    p.add_argument("--dist", choices=("sparse", "clustered"), default="sparse")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--groups", type=int, default=20, help="batched_nms: number of groups")
    p.add_argument("--bench-shape", action="store_true", help="RoIAlign: the kernel benchmark's workload")
    p.add_argument("--kernels", choices=("v1", "v2"), default=None, help="CUDA kernel generation")
    p.add_argument("--out", type=Path, default=Path("reports/profile"))
    p.add_argument("--ncu", action="store_true", help="also run under Nsight Compute (GPU machines)")
    p.add_argument("--_plain", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.size < 0:
        p.error("--size must be >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here")
    if args.groups < 1:
        p.error("--groups must be >= 1")
    if args.kernels:
        ops.set_kernel_version(args.kernels)
    call = build_call(args.op, args.dim, args.size, args.device, args.dist, groups=args.groups,
                      bench_shape=args.bench_shape)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for _ in range(2):  # warm-up (first-call allocations, lazy module loading)
        call()
    sync()
    if args._plain:  # what Nsight Compute sees: the workload alone
        for _ in range(args.iters):
            call()
        sync()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    shape = "bench" if args.bench_shape and args.op.startswith("roi_align") else str(args.size)
    tag = f"_{args.kernels}" if args.kernels else ""
    stem = args.out / f"{args.op}_D{args.dim}_{shape}_{args.dist}_{args.device.split(':')[0]}{tag}"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for _ in range(args.iters):
            call()
        sync()
    prof.export_chrome_trace(f"{stem}.trace.json")
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=25)
    Path(f"{stem}.table.txt").write_text(table)
    print(table)
    print(f"wrote {stem}.trace.json and {stem}.table.txt")
    if args.ncu:
        ncu = shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
        if not os.path.exists(ncu):
            print("--ncu: Nsight Compute (ncu) was not found", file=sys.stderr)
            return 1
        cmd = [ncu, "--target-processes", "all", "--set", "basic", "-k", "regex:retina|nms|roi|iou",
               "-f", "-o", str(stem), sys.executable, "-m", "benchmarks.profile_op", "--op", args.op,
               "--dim", str(args.dim), "--size", str(args.size), "--dist", args.dist, "--device", args.device,
               "--iters", "1", "--groups", str(args.groups), *(["--bench-shape"] if args.bench_shape else []),
               *(["--kernels", args.kernels] if args.kernels else []), "--_plain"]
        subprocess.run(cmd, check=True)
        summary = subprocess.run([ncu, "--import", f"{stem}.ncu-rep", "--print-summary", "per-kernel"],
                                 check=True, capture_output=True, text=True).stdout
        Path(f"{stem}.ncu.txt").write_text(summary)
        print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
