"""Exercise every CUDA kernel of ``retina_unet._C`` once, for compute-sanitizer.

Run as ``compute-sanitizer --tool memcheck python benchmarks/sanitizer_driver.py`` (and with
``--tool racecheck ... --quick``). Covers 2D and 3D, float32/float64/half, empty inputs, sizes around
the 64-box tiles, score ties, degenerate/out-of-range/NaN rois, batched and padded NMS, RoIAlign
forward and both backward paths (atomic and deterministic). Each result is also checked against the
CPU kernels, so a kernel that is memory-clean but wrong still fails here.
"""

from __future__ import annotations

import argparse
import sys

import torch

from retina_unet import ops


def boxes(n: int, d: int, g: torch.Generator, *, spread: float = 200.0, size: float = 20.0) -> torch.Tensor:
    lo = torch.rand(n, d, generator=g, dtype=torch.float64) * spread
    ext = 1 + torch.rand(n, d, generator=g, dtype=torch.float64) * size
    return torch.cat([lo, lo + ext], dim=1)


def check_equal(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if not torch.equal(got.cpu(), want.cpu()):
        raise AssertionError(f"{name}: CUDA result differs from CPU\n cuda={got.cpu()[:20]}\n cpu={want.cpu()[:20]}")


def run_nms(quick: bool) -> None:
    g = torch.Generator().manual_seed(0)
    sizes = [0, 1, 63, 64, 65, 700] if quick else [0, 1, 63, 64, 65, 129, 1000, 4097]
    for d in (2, 3):
        for n in sizes:
            for dtype in (torch.float32, torch.float64, torch.float16):
                b = boxes(n, d, g, spread=60.0).to(dtype)
                s = torch.randint(0, 20, (n,), generator=g).to(dtype)  # many ties
                for t in (0.0, 0.3, 0.5):
                    check_equal(f"nms d={d} n={n} {dtype} t={t}", ops.nms(b.cuda(), s.cuda(), t), ops.nms(b, s, t))
                grp = torch.randint(-3, 5, (n,), generator=g)
                check_equal(f"batched d={d} n={n}", ops.batched_nms(b.cuda(), s.cuda(), grp.cuda(), 0.4),
                            ops.batched_nms(b, s, grp, 0.4))
                check_equal(f"nms max_output d={d} n={n}", ops.nms(b.cuda(), s.cuda(), 0.5, max_output=5),
                            ops.nms(b, s, 0.5, max_output=5))
                k1, c1 = ops.nms_padded(b.cuda(), s.cuda(), 0.5, 17)
                k0, c0 = ops.nms_padded(b, s, 0.5, 17)
                check_equal(f"nms_padded d={d} n={n}", k1, k0)
                check_equal(f"nms_padded count d={d} n={n}", c1, c0)
                k1, c1 = ops.batched_nms_padded(b.cuda(), s.cuda(), grp.cuda(), 0.5, 11)
                k0, c0 = ops.batched_nms_padded(b, s, grp, 0.5, 11)
                check_equal(f"batched_nms_padded d={d} n={n}", k1, k0)
        a, bb = boxes(37, d, g), boxes(70, d, g)
        torch.testing.assert_close(ops.box_iou(a.cuda(), bb.cuda()).cpu(), ops.box_iou(a, bb), rtol=0, atol=0)
        ops.box_iou(a[:0].cuda(), bb.cuda())


def run_roi_align(quick: bool) -> None:
    g = torch.Generator().manual_seed(1)
    for d, shape, out in ((2, (2, 5, 23, 31), (7, 7)), (3, (2, 3, 9, 17, 13), (3, 5, 4))):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        k = 9 if quick else 40
        b = boxes(k, d, g, spread=min(shape[2:]) * 1.2, size=8.0) - 3  # some outside, some clipped
        b[0, d:] = b[0, :d]  # degenerate
        b[1] = torch.tensor([-50.0] * d + [-40.0] * d)  # fully outside
        b[2, :d], b[2, d:] = -1e6, 1e6  # huge
        idx = torch.randint(0, shape[0], (k, 1), generator=g).double()
        rois = torch.cat([idx, b], dim=1)
        for aligned in (True, False):
            for sr in (-1, 2):
                for dtype in ((torch.float32, torch.float64) if not quick else (torch.float32,)):
                    xc = x.to(dtype).cuda().requires_grad_()
                    xh = x.to(dtype).requires_grad_()
                    yc = ops.roi_align(xc, rois.to(dtype).cuda(), out, 0.5, sr, aligned)
                    yh = ops.roi_align(xh, rois.to(dtype), out, 0.5, sr, aligned)
                    tol = 1e-4 if dtype == torch.float32 else 1e-10
                    torch.testing.assert_close(yc.cpu(), yh.detach(), rtol=tol, atol=tol)
                    gy = torch.randn(yh.shape, generator=g, dtype=torch.float64).to(dtype)
                    (gc,) = torch.autograd.grad(yc, xc, gy.cuda())
                    (gh,) = torch.autograd.grad(yh, xh, gy)
                    torch.testing.assert_close(gc.cpu(), gh, rtol=tol, atol=tol)
                    torch.use_deterministic_algorithms(True)
                    try:
                        yc = ops.roi_align(xc, rois.to(dtype).cuda(), out, 0.5, sr, aligned)
                        (gd,) = torch.autograd.grad(yc, xc, gy.cuda())
                    finally:
                        torch.use_deterministic_algorithms(False)
                    torch.testing.assert_close(gd.cpu(), gh, rtol=tol, atol=tol)
        xh16 = x.half().cuda().requires_grad_()
        y16 = ops.roi_align(xh16, rois.half().cuda(), out, 1.0, -1, True)
        y16.float().sum().backward()
        ops.roi_align(x.cuda(), rois[:0].cuda(), out)  # empty
        nan_rois = rois.clone()
        nan_rois[3, 1] = float("nan")
        try:  # the wrapper may reject NaN rois; the kernel must not crash or read out of bounds either way
            ops.roi_align(x.cuda(), nan_rois.cuda(), out)
        except ValueError:
            pass


def run_nms_status() -> None:
    """The device-side NaN/inf status (exact-size ops raise at their sync; padded ops do not check)."""
    g = torch.Generator().manual_seed(5)
    b = boxes(300, 2, g).float()
    s = torch.rand(300, generator=g)
    b[17, 1] = float("nan")
    try:
        ops.nms(b.cuda(), s.cuda(), 0.5)
    except ValueError:
        pass
    else:
        raise AssertionError("nms on CUDA accepted a NaN coordinate")
    keep, num = ops.nms_padded(b.cuda(), s.cuda(), 0.5, 50)  # unspecified result, but memory-clean
    torch.cuda.synchronize()
    assert 0 <= int(num) <= 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes (racecheck is slow)")
    parser.add_argument("--kernels", choices=("v1", "v2"), default=None, help="CUDA kernel generation")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    if args.kernels:
        ops.set_kernel_version(args.kernels)
    run_nms(args.quick)
    run_nms_status()
    run_roi_align(args.quick)
    torch.cuda.synchronize()
    print(f"sanitizer driver ({ops.kernel_version()}): all kernels ran and matched the CPU kernels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
