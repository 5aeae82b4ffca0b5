"""box_iou: the compiled kernels against the float64 reference, and its invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from retina_unet.ops import box_iou
from retina_unet.ops.reference import box_iou_reference
from tests.conftest import cpu_and_cuda


def random_boxes(n: int, d: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, d, generator=g, dtype=torch.float64) * 50
    ext = torch.rand(n, d, generator=g, dtype=torch.float64) * 20
    return torch.cat([lo, lo + ext], dim=1).to(dtype=dtype, device=device)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("n,m", [(0, 0), (0, 5), (5, 0), (1, 1), (17, 33)])
def test_matches_float64_reference(device, d, n, m):
    a, b = random_boxes(n, d, 1, device=device), random_boxes(m, d, 2, device=device)
    out = box_iou(a, b)
    assert out.shape == (n, m) and out.dtype == torch.float64 and out.device.type == device
    torch.testing.assert_close(out.cpu(), box_iou_reference(a, b).cpu(), rtol=0, atol=0)


@cpu_and_cuda()
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_close_to_reference(device, dtype):
    a, b = random_boxes(20, 3, 3), random_boxes(30, 3, 4)
    out = box_iou(a.to(device, dtype), b.to(device, dtype))
    assert out.dtype == dtype
    ref = box_iou_reference(a.to(dtype), b.to(dtype))
    torch.testing.assert_close(out.double().cpu(), ref, rtol=0, atol=2e-3 if dtype != torch.float32 else 1e-6)


def test_exact_dyadic_cases():
    a = torch.tensor([[0.0, 0, 4, 1], [0, 0, 2, 1], [5, 5, 5, 9], [3, 3, 1, 1]])
    iou = box_iou(a, a)
    assert iou[0, 1].item() == 0.5
    # zero-volume and inverted boxes have IoU 0 with everything, themselves included
    assert (iou[2] == 0).all() and (iou[:, 3] == 0).all()


@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.sampled_from([2, 3]),
    shift=st.floats(-100, 100, allow_nan=False),
    scale_exp=st.integers(-3, 3),
)
def test_invariances(seed, d, shift, scale_exp):
    a, b = random_boxes(7, d, seed), random_boxes(9, d, seed + 1)
    base = box_iou(a, b)
    torch.testing.assert_close(box_iou(a + shift, b + shift), base, rtol=0, atol=1e-9)
    s = 2.0**scale_exp  # power-of-two scaling is exact in floating point
    torch.testing.assert_close(box_iou(a * s, b * s), base, rtol=0, atol=0)
    torch.testing.assert_close(box_iou(b, a), base.T, rtol=0, atol=0)
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(seed))
    cols = torch.cat([perm, perm + d])
    torch.testing.assert_close(box_iou(a[:, cols], b[:, cols]), base, rtol=0, atol=1e-12)
    assert ((base >= 0) & (base <= 1)).all()


def test_3d_with_shared_extent_equals_2d():
    a2, b2 = random_boxes(10, 2, 5), random_boxes(12, 2, 6)

    def lift(x):
        return torch.cat([x[:, :2], torch.zeros(len(x), 1), x[:, 2:], torch.full((len(x), 1), 3.0)], dim=1).double()

    torch.testing.assert_close(box_iou(lift(a2), lift(b2)), box_iou(a2, b2), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "a,b,match",
    [
        (torch.zeros(3, 5), torch.zeros(2, 4), "boxes1 must have shape"),
        (torch.zeros(3, 4), torch.zeros(2, 6), "boxes1 is 2D"),
        (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(2, 4), "floating"),
        (torch.zeros(3, 4), torch.zeros(2, 4, dtype=torch.float64), "share a dtype"),
        (torch.tensor([[0.0, 0, float("nan"), 1]]), torch.zeros(2, 4), "NaN"),
        (torch.zeros(4), torch.zeros(2, 4), "boxes1 must have shape"),
    ],
)
def test_bad_input_names_argument(a, b, match):
    with pytest.raises((ValueError, TypeError), match=match):
        box_iou(a, b)


def test_opcheck():
    a, b = random_boxes(5, 3, 7, dtype=torch.float32), random_boxes(6, 3, 8, dtype=torch.float32)
    torch.library.opcheck(torch.ops.retina_unet.box_iou.default, (a, b))


def test_reference_backend_switch():
    from retina_unet.ops import backend_for, reference_ops

    a = random_boxes(4, 2, 9, dtype=torch.float32)
    assert backend_for("cpu") == "compiled-cpu"
    with reference_ops():
        assert backend_for("cpu") == "reference"
        out = box_iou(a, a)
    assert backend_for("cpu") == "compiled-cpu"
    torch.testing.assert_close(out, box_iou(a, a), rtol=0, atol=1e-6)
