"""roi_align: kernels against the float64 reference and torchvision, gradients, registration, errors."""

from __future__ import annotations

import pytest
import torch

from retina_unet.ops import RoIAlign, roi_align
from retina_unet.ops.reference import roi_align_grid_sample, roi_align_reference
from tests.conftest import cpu_and_cuda

SIZES = {2: (13, 17), 3: (9, 11, 7)}


def random_rois(k: int, d: int, n: int, sizes, seed: int, max_extent: float = 12.0, margin: float = 3.0):
    """Rois (K, 1 + 2D) in float64, some partly outside the input (by up to `margin`)."""
    g = torch.Generator().manual_seed(seed)
    span = torch.tensor(sizes, dtype=torch.float64)
    lo = torch.rand(k, d, generator=g, dtype=torch.float64) * (span + 2 * margin) - margin
    ext = torch.rand(k, d, generator=g, dtype=torch.float64) * max_extent
    b = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([b, lo, lo + ext], dim=1)


def random_input(d: int, seed: int, n: int = 2, c: int = 3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, *SIZES[d], generator=g, dtype=torch.float64).to(dtype)


def to_torchvision_rois(rois: torch.Tensor) -> torch.Tensor:
    """Ours (b, y1, x1, y2, x2) -> torchvision (b, x1, y1, x2, y2)."""
    return rois[:, [0, 2, 1, 4, 3]]


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
def test_matches_float64_reference(device, d, dtype, aligned, sampling_ratio):
    x, rois = random_input(d, 1, dtype=dtype), random_rois(20, d, 2, SIZES[d], 2).to(dtype)
    out = roi_align(x.to(device), rois.to(device), (3, 4, 2)[:d], 0.5 * 2, sampling_ratio, aligned)
    assert out.shape == (20, 3, *(3, 4, 2)[:d]) and out.dtype == dtype and out.device.type == device
    ref = roi_align_reference(x, rois, (3, 4, 2)[:d], 1.0, sampling_ratio, aligned)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out.cpu().double(), ref, rtol=0, atol=tol)


@cpu_and_cuda()
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25])
def test_2d_equals_torchvision(device, dtype, aligned, sampling_ratio, spatial_scale):
    import torchvision
    x = random_input(2, 3, dtype=dtype).to(device)
    rois = random_rois(25, 2, 2, SIZES[2], 4).to(dtype)
    rois[:, 1:] /= spatial_scale  # image coordinates
    rois = rois.to(device)
    out = roi_align(x, rois, (5, 3), spatial_scale, sampling_ratio, aligned)
    tv = torchvision.ops.roi_align(
        x, to_torchvision_rois(rois), (5, 3), spatial_scale, sampling_ratio, aligned
    )
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, tv, rtol=0, atol=tol)


def test_grid_sample_reference_agrees():
    for d in (2, 3):
        x, rois = random_input(d, 5), random_rois(15, d, 2, SIZES[d], 6)
        for sr, aligned in ((-1, True), (2, False), (1, True)):
            ref = roi_align_reference(x, rois, 3, 1.0, sr, aligned)
            torch.testing.assert_close(
                roi_align_grid_sample(x, rois, 3, 1.0, sr, aligned), ref, rtol=0, atol=1e-12
            )


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
def test_constant_input_gives_constant(device, d):
    x = torch.full((1, 2, *SIZES[d]), 3.25, dtype=torch.float64, device=device)
    g = torch.Generator().manual_seed(7)  # rois inside the input, with positive extents
    lo = torch.rand(30, d, generator=g, dtype=torch.float64) * (torch.tensor(SIZES[d]) - 5)
    hi = lo + 0.25 + torch.rand(30, d, generator=g, dtype=torch.float64) * 4
    rois = torch.cat([torch.zeros(30, 1, dtype=torch.float64), lo, hi], 1)
    out = roi_align(x, rois.to(device), 4)
    torch.testing.assert_close(out, torch.full_like(out, 3.25), rtol=0, atol=1e-13)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("sampling_ratio", [-1, 3])
def test_linear_interpolation_exact_on_affine_input(device, d, sampling_ratio):
    sizes = SIZES[d]
    coef = torch.tensor([0.75, -1.5, 2.0][:d], dtype=torch.float64)
    grids = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in sizes), indexing="ij")
    field = 0.5 + sum(coef[k] * grids[k] for k in range(d))
    x = field[None, None].to(device)
    # aligned rois strictly inside [0.5, size - 0.5] keep every sample in [0, size - 1]
    g = torch.Generator().manual_seed(8)
    lo = 0.5 + torch.rand(20, d, generator=g, dtype=torch.float64) * (torch.tensor(sizes) - 4)
    hi = lo + torch.rand(20, d, generator=g, dtype=torch.float64) * (torch.tensor(sizes) - 0.5 - lo)
    rois = torch.cat([torch.zeros(20, 1, dtype=torch.float64), lo, hi], 1)
    out_size = (3, 2, 4)[:d]
    out = roi_align(x, rois.to(device), out_size, 1.0, sampling_ratio, True)[:, 0].cpu()
    start, bins = lo - 0.5, (hi - lo) / torch.tensor(out_size)
    expected = torch.full((20, *out_size), 0.5, dtype=torch.float64)
    for k in range(d):  # affine: the mean of symmetric samples is the value at the bin centre
        centre = start[:, k, None] + (torch.arange(out_size[k]) + 0.5) * bins[:, k, None]
        shape = [20] + [out_size[m] if m == k else 1 for m in range(d)]
        expected = expected + coef[k] * centre.reshape(shape)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@cpu_and_cuda()
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_3d_constant_along_axis_reduces_to_2d(device, axis):
    x2 = random_input(2, 9, n=2, c=2)  # (2, 2, 13, 17)
    x3 = x2.unsqueeze(2 + axis).expand(*x2.shape[: 2 + axis], 6, *x2.shape[2 + axis :]).contiguous()
    r2 = random_rois(12, 2, 2, SIZES[2], 10)
    zlo, zhi = torch.full((12, 1), 0.75, dtype=torch.float64), torch.full((12, 1), 4.5, dtype=torch.float64)
    lo = torch.cat([r2[:, 1:3, None][:, :axis, 0], zlo, r2[:, 1:3][:, axis:]], 1)
    hi = torch.cat([r2[:, 3:5][:, :axis], zhi, r2[:, 3:5][:, axis:]], 1)
    r3 = torch.cat([r2[:, :1], lo, hi], 1)
    out2 = roi_align(x2.to(device), r2.to(device), (4, 3))
    out3 = roi_align(x3.to(device), r3.to(device), [(4, 3)[:axis] + (5,) + (4, 3)[axis:]][0])
    torch.testing.assert_close(out3, out2.unsqueeze(2 + axis).expand_as(out3), rtol=0, atol=1e-12)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("aligned,sampling_ratio", [(True, -1), (False, 2)])
def test_adjoint(device, d, aligned, sampling_ratio):
    x, rois = random_input(d, 11).to(device), random_rois(16, d, 2, SIZES[d], 12).to(device)
    out_size = [3] * d
    y = torch.ops.retina_unet.roi_align(x, rois, 1.0, out_size, sampling_ratio, aligned)
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(13)).to(device)
    gx = torch.ops.retina_unet._roi_align_backward(
        g, rois, 1.0, out_size, sampling_ratio, aligned, list(x.shape)
    )
    torch.testing.assert_close((y * g).sum(), (x * gx).sum(), rtol=1e-12, atol=1e-12)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("aligned,sampling_ratio", [(True, -1), (False, 2)])
def test_gradcheck(device, d, aligned, sampling_ratio):
    sizes = (5, 6, 4)[:d]
    x = torch.randn(2, 2, *sizes, dtype=torch.float64, device=device, requires_grad=True)
    rois = random_rois(5, d, 2, sizes, 14, max_extent=5.0).to(device)
    fn = lambda t: roi_align(t, rois, 2, 1.0, sampling_ratio, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@cpu_and_cuda()
def test_backward_matches_reference_autograd(device):
    for d in (2, 3):
        x = random_input(d, 15).requires_grad_()
        rois = random_rois(10, d, 2, SIZES[d], 16)
        g = torch.randn(10, 3, *[3] * d, dtype=torch.float64)
        (ref,) = torch.autograd.grad(roi_align_reference(x, rois, 3), x, g)
        xd = x.detach().to(device).requires_grad_()
        (ours,) = torch.autograd.grad(roi_align(xd, rois.to(device), 3), xd, g.to(device))
        torch.testing.assert_close(ours.cpu(), ref, rtol=0, atol=1e-12)


@cpu_and_cuda()
@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0])
def test_spatial_scale_equivariance(device, scale):
    for d in (2, 3):
        x, rois = random_input(d, 17).to(device), random_rois(10, d, 2, SIZES[d], 18).to(device)
        image_rois = rois.clone()
        image_rois[:, 1:] /= scale
        torch.testing.assert_close(roi_align(x, image_rois, 3, scale), roi_align(x, rois, 3), rtol=0, atol=0)


@cpu_and_cuda()
def test_deterministic_backward_is_bitwise_reproducible(device):
    x = random_input(3, 19, dtype=torch.float32).to(device)
    rois = random_rois(64, 3, 2, SIZES[3], 20).float().to(device)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(3):
            xx = x.clone().requires_grad_()
            roi_align(xx, rois, (3, 3, 2)).pow(2).sum().backward()
            grads.append(xx.grad)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    xx = x.clone().requires_grad_()
    roi_align(xx, rois, (3, 3, 2)).pow(2).sum().backward()  # default path (atomics on CUDA)
    torch.testing.assert_close(xx.grad, grads[0], rtol=1e-5, atol=1e-5)


@cpu_and_cuda()
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_close_to_float32(device, dtype):
    for d in (2, 3):
        x, rois = random_input(d, 21, dtype=torch.float32), random_rois(12, d, 2, SIZES[d], 22).float()
        rois = rois.to(dtype).float()  # the same (representable) rois for both
        ref = roi_align(x.to(device), rois.to(device), 3)
        xl = x.to(device, dtype).requires_grad_()
        out = roi_align(xl, rois.to(device, dtype), 3)
        assert out.dtype == dtype
        tol = 2e-2 if dtype == torch.float16 else 8e-2
        torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
        out.float().sum().backward()
        assert xl.grad.dtype == dtype and torch.isfinite(xl.grad.float()).all()


@cpu_and_cuda()
def test_opcheck(device):
    for d in (2, 3):
        x = random_input(d, 23, dtype=torch.float32).to(device).requires_grad_()
        rois = random_rois(6, d, 2, SIZES[d], 24).float().to(device)
        args = (x, rois, 0.5, [2] * d, 2, True)
        torch.library.opcheck(torch.ops.retina_unet.roi_align.default, args)
        g = torch.randn(6, 3, *[2] * d, device=device)
        bargs = (g, rois, 0.5, [2] * d, 2, True, list(x.shape))
        torch.library.opcheck(torch.ops.retina_unet._roi_align_backward.default, bargs)


def test_torch_compile_forward_backward():
    x = random_input(3, 25, dtype=torch.float32)
    rois = random_rois(8, 3, 2, SIZES[3], 26).float()

    def head(feat, r):
        return roi_align(feat * 2.0, r, (2, 3, 2), 0.5).relu().sum()

    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = head(xa, rois), compiled(xb, rois)
    ya.backward()
    yb.backward()
    torch.testing.assert_close(yb, ya)
    torch.testing.assert_close(xb.grad, xa.grad)


def test_autocast_mixed_dtypes():
    x, rois = random_input(2, 31, dtype=torch.float32), random_rois(6, 2, 2, SIZES[2], 32).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(x.bfloat16(), rois, 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), roi_align(x.bfloat16().float(), rois, 3), rtol=1e-2, atol=1e-2)


def test_module_and_reference_switch():
    from retina_unet.ops import reference_ops

    x, rois = random_input(3, 27, dtype=torch.float32), random_rois(5, 3, 2, SIZES[3], 28).float()
    m = RoIAlign((2, 2, 3), spatial_scale=1.0, sampling_ratio=2, aligned=False)
    assert "sampling_ratio=2" in repr(m)
    out = m(x, rois)
    with reference_ops():
        ref = m(x, rois)
    assert ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(input=torch.zeros(2, 3, 4)), ValueError, "input must be 4-d"),
        (dict(input=torch.zeros(1, 1, 4, 4, dtype=torch.int64)), TypeError, "input must be a floating"),
        (dict(rois=torch.zeros(3, 7)), ValueError, r"rois must have shape \(K, 5\)"),
        (dict(rois=torch.zeros(3, 5, dtype=torch.float64)), TypeError, "rois must have the dtype"),
        (dict(output_size=0), ValueError, "output_size must be 2 positive"),
        (dict(output_size=(2, 2, 2)), ValueError, "output_size must be 2 positive"),
        (dict(output_size=2.5), TypeError, "output_size"),
        (dict(spatial_scale=0.0), ValueError, "spatial_scale"),
        (dict(spatial_scale=float("nan")), ValueError, "spatial_scale"),
        (dict(sampling_ratio=1.5), TypeError, "sampling_ratio"),
        (dict(aligned=1), TypeError, "aligned"),
        (dict(rois=torch.tensor([[2.0, 0, 0, 1, 1]])), ValueError, r"rois\[:, 0\]"),
        (dict(rois=torch.tensor([[-1.0, 0, 0, 1, 1]])), ValueError, r"rois\[:, 0\]"),
        (dict(rois=torch.tensor([[0.5, 0, 0, 1, 1]])), ValueError, r"rois\[:, 0\]"),
        (dict(rois=torch.tensor([[float("nan"), 0, 0, 1, 1]])), ValueError, r"rois\[:, 0\]"),
    ],
)
def test_bad_input_names_argument(kwargs, exc, match):
    args = dict(input=torch.zeros(2, 3, 8, 8), rois=torch.tensor([[1.0, 0, 0, 4, 4]]), output_size=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        roi_align(**args)


def test_raw_op_rejects_bad_batch_index():
    with pytest.raises(RuntimeError, match="batch index"):
        torch.ops.retina_unet.roi_align(
            torch.zeros(1, 1, 4, 4), torch.tensor([[3.0, 0, 0, 2, 2]]), 1.0, [2, 2], -1, True
        )


@pytest.mark.cuda
def test_cpu_equals_cuda():
    for d in (2, 3):
        for dtype in (torch.float64, torch.float32):
            x = random_input(d, 29, dtype=dtype).requires_grad_()
            rois = random_rois(40, d, 2, SIZES[d], 30).to(dtype)
            xc = x.detach().cuda().requires_grad_()
            out, outc = roi_align(x, rois, 3), roi_align(xc, rois.cuda(), 3)
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(outc.cpu(), out, rtol=0, atol=tol)
            g = torch.randn_like(out)
            out.backward(g)
            outc.backward(g.cuda())
            torch.testing.assert_close(xc.grad.cpu(), x.grad, rtol=0, atol=tol * 10)
