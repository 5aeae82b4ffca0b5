"""nms / batched_nms / padded variants: the kernels against the float64 reference and the peers."""

from __future__ import annotations

import pytest
import torch

from retina_unet.ops import (
    batched_nms,
    batched_nms_padded,
    box_iou,
    nms,
    nms_padded,
    reference_ops,
    to_torchvision,
)
from retina_unet.ops.reference import batched_nms_reference, nms_reference
from tests.conftest import cpu_and_cuda

LOW = [torch.float16, torch.bfloat16, torch.float32]


def random_boxes(n: int, d: int, seed: int, *, side: float = 100.0, dtype=torch.float64, device="cpu"):
    """Boxes of extent 2..22 in a cube of `side`, and distinct scores."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, d, generator=g, dtype=torch.float64) * side
    ext = 2 + torch.rand(n, d, generator=g, dtype=torch.float64) * 20
    scores = torch.randperm(n, generator=g).double() / max(n, 1)
    return torch.cat([lo, lo + ext], 1).to(device, dtype), scores.to(device, dtype)


def integer_boxes(n: int, d: int, seed: int, *, device="cpu", dtype=torch.float32, score_levels: int = 0):
    """Integer coordinates in [0, 64]: exact in every dtype, and IoUs never within rounding of a threshold."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, 48, (n, d), generator=g)
    ext = torch.randint(1, 17, (n, d), generator=g)
    if score_levels:
        scores = torch.randint(0, score_levels, (n,), generator=g).double() / score_levels
    else:
        scores = torch.randperm(n, generator=g).double() / max(n, 1)
    return torch.cat([lo, lo + ext], 1).to(device, dtype), scores.to(device, dtype)


def lift(boxes2d: torch.Tensor, lo: float = -1.0, hi: float = 3.0) -> torch.Tensor:
    """2D boxes -> 3D boxes sharing the extent [lo, hi] along the new last axis."""
    n = boxes2d.shape[0]
    col = boxes2d.new_full((n, 1), lo), boxes2d.new_full((n, 1), hi)
    return torch.cat([boxes2d[:, :2], col[0], boxes2d[:, 2:], col[1]], 1)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 4095, 4096, 4097])
def test_matches_reference_at_tile_sizes(device, d, n):
    # side chosen so that large N has plenty of overlaps (clusters of suppression)
    boxes, scores = random_boxes(n, d, seed=n + d, side=30.0 * max(n, 1) ** (1 / d), device=device)
    keep = nms(boxes, scores, 0.3)
    assert keep.dtype == torch.int64 and keep.device.type == device
    assert torch.equal(keep.cpu(), nms_reference(boxes.cpu(), scores.cpu(), 0.3))


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_mixed_scales_match_reference(device, d, threshold):
    # log-uniform extents 1..600 in a 1000-wide image: huge boxes take the CPU kernel's "big box" path
    g = torch.Generator().manual_seed(d)
    ext = torch.exp(torch.rand(1500, d, generator=g, dtype=torch.float64) * 6.4)
    lo = torch.rand(1500, d, generator=g, dtype=torch.float64) * 1000 - 100
    boxes, scores = torch.cat([lo, lo + ext], 1), torch.rand(1500, generator=g, dtype=torch.float64)
    keep = nms(boxes.to(device), scores.to(device), threshold).cpu()
    assert torch.equal(keep, nms_reference(boxes, scores, threshold))


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("threshold", [0.0, 0.125, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("dtype", [*LOW, torch.float64])
def test_integer_boxes_match_reference_in_every_dtype(device, d, threshold, dtype):
    # Dyadic thresholds: an IoU p/q equal to t is exact in float32 too, and one that differs does so by
    # >= 1/(8q), far above float32 rounding. (With t = 0.1 an IoU of exactly 10/100 rounds up in float32
    # and is suppressed: float32 IoU is the contract for float32 boxes.)
    boxes, scores = integer_boxes(300, d, seed=7, device=device, dtype=dtype, score_levels=8)
    expect = nms_reference(boxes.cpu(), scores.cpu(), threshold)
    assert torch.equal(nms(boxes, scores, threshold).cpu(), expect)
    groups = torch.arange(300, device=device) % 3
    expect = batched_nms_reference(boxes.cpu(), scores.cpu(), groups.cpu(), threshold)
    assert torch.equal(batched_nms(boxes, scores, groups, threshold).cpu(), expect)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", [*LOW, torch.float64])
def test_boxes_exactly_at_threshold(device, d, dtype):
    boxes = torch.tensor([[0.0, 0, 4, 1], [0, 0, 2, 1]], dtype=dtype, device=device)  # IoU 0.5 exactly
    if d == 3:
        boxes = lift(boxes)
    scores = torch.tensor([0.9, 0.8], dtype=dtype, device=device)
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]  # strict: IoU == t is kept
    assert nms(boxes, scores, 0.5 + 1e-5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5 - 1e-5).tolist() == [0]
    assert nms(boxes, scores, 0.49999999999).tolist() == [0]  # below t in float64, rounds to 0.5 in float32


@cpu_and_cuda()
def test_ties_keep_the_lower_index(device):
    box = torch.tensor([[0.0, 0, 10, 10]], device=device)
    boxes = box.repeat(5, 1)
    assert nms(boxes, torch.zeros(5, device=device), 0.5).tolist() == [0]
    scores = torch.tensor([1.0, 2.0, 2.0, -0.0, 0.0], device=device)
    assert nms(boxes, scores, 0.5).tolist() == [1]
    far = boxes + torch.arange(5, device=device)[:, None] * 100.0
    assert nms(far, scores, 0.5).tolist() == [1, 2, 0, 3, 4]  # -0.0 ties with +0.0


@pytest.mark.cuda
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_cpu_equals_cuda_with_ties(d, dtype):
    for seed in range(4):
        boxes, scores = integer_boxes(5000, d, seed, dtype=dtype, score_levels=16)
        groups = torch.randint(-2, 5, (5000,), generator=torch.Generator().manual_seed(seed))
        for t in (0.0, 0.3, 0.7):
            assert torch.equal(nms(boxes, scores, t), nms(boxes.cuda(), scores.cuda(), t).cpu())
            cpu = batched_nms(boxes, scores, groups, t)
            assert torch.equal(cpu, batched_nms(boxes.cuda(), scores.cuda(), groups.cuda(), t).cpu())


@cpu_and_cuda()
@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_torchvision(device, seed):
    import torchvision as tv
    boxes, scores = random_boxes(2000, 2, seed, side=300.0, dtype=torch.float32, device=device)
    tvb = to_torchvision(boxes).contiguous()
    assert torch.equal(nms(boxes, scores, 0.4), tv.ops.nms(tvb, scores, 0.4))
    groups = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(seed)).to(device)
    assert torch.equal(batched_nms(boxes, scores, groups, 0.4), tv.ops.batched_nms(tvb, scores, groups, 0.4))
    # 3D boxes sharing one extent give the 2D result (and so torchvision's)
    assert torch.equal(nms(lift(boxes), scores, 0.4), tv.ops.nms(tvb, scores, 0.4))


@pytest.mark.parametrize("seed", range(3))
def test_3d_agrees_with_monai(seed):
    import monai.data.box_utils as box_utils
    boxes, scores = random_boxes(400, 3, seed, side=60.0, dtype=torch.float32)
    # MONAI's corner mode "xyzxyz" is our layout; it keeps IoU <= t (strict like ours) but adds
    # eps to the union, so compare away from the threshold: continuous random boxes, no ties.
    ours = nms(boxes, scores, 0.25)
    assert torch.equal(ours, box_utils.non_max_suppression(boxes, scores, 0.25))
    assert torch.equal(nms(boxes, scores, 0.25, max_output=17), ours[:17])


@cpu_and_cuda()
def test_groups_never_suppress_each_other(device):
    box = torch.tensor([[-30.0, -20, -10, -5, 7, 3]], device=device)  # negative coordinates
    boxes = box.repeat(6, 1)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.3, 0.9], device=device)
    groups = torch.tensor([3, -1, 3, 0, -1, 7], device=device)
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [1, 5, 2, 3]
    assert batched_nms(boxes, scores, groups, 0.5, max_output=3).tolist() == [1, 5, 2]
    assert nms(boxes, scores, 0.5).tolist() == [1]
    # integer groups of any width
    assert batched_nms(boxes, scores, groups.int(), 0.5).tolist() == [1, 5, 2, 3]


@cpu_and_cuda()
def test_degenerate_boxes_are_kept_and_never_suppress(device):
    boxes = torch.tensor(
        [[0.0, 0, 10, 10], [5, 5, 5, 9], [3, 3, 1, 1], [0, 0, 10, 10], [0, 0, 10, 10.0]], device=device
    )
    boxes[4] = torch.tensor([0.0, 0, 0, 0])
    scores = torch.tensor([0.1, 0.9, 0.8, 0.05, 0.7], device=device)
    assert nms(boxes, scores, 0.0).tolist() == [1, 2, 4, 0]


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("max_output", [0, 1, 5, 50, 10_000])
def test_max_output_and_padded(device, d, max_output):
    boxes, scores = random_boxes(700, d, 3, side=80.0, device=device, dtype=torch.float32)
    groups = torch.randint(0, 4, (700,), generator=torch.Generator().manual_seed(1)).to(device)
    full = nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5, max_output=max_output), full[:max_output])
    keep, num = nms_padded(boxes, scores, 0.5, max_output)
    assert keep.shape == (max_output,) and num.shape == () and num.dtype == torch.int64
    assert torch.equal(keep[: int(num)], full[:max_output]) and (keep[int(num) :] == -1).all()
    bfull = batched_nms(boxes, scores, groups, 0.5)
    assert torch.equal(bfull.cpu(), batched_nms_reference(boxes.cpu(), scores.cpu(), groups.cpu(), 0.5))
    assert torch.equal(batched_nms(boxes, scores, groups, 0.5, max_output=max_output), bfull[:max_output])
    keep, num = batched_nms_padded(boxes, scores, groups, 0.5, max_output)
    assert keep.shape == (max_output,) and int(num) == min(max_output, len(bfull))
    assert torch.equal(keep[: int(num)], bfull[:max_output]) and (keep[int(num) :] == -1).all()


@cpu_and_cuda()
def test_empty_input(device):
    boxes, scores = torch.zeros(0, 6, device=device), torch.zeros(0, device=device)
    out = nms(boxes, scores, 0.5)
    assert out.shape == (0,) and out.dtype == torch.int64 and out.device.type == device
    assert batched_nms(boxes, scores, torch.zeros(0, dtype=torch.int64, device=device), 0.5).shape == (0,)
    keep, num = nms_padded(boxes, scores, 0.5, 3)
    assert keep.tolist() == [-1, -1, -1] and int(num) == 0


B, S = torch.zeros(3, 4), torch.zeros(3)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: nms(torch.zeros(3, 5), S, 0.5), "boxes must have shape"),
        (lambda: nms(torch.zeros(3), S, 0.5), "boxes must have shape"),
        (lambda: nms(B, torch.zeros(4), 0.5), r"scores must have shape \(3,\)"),
        (lambda: nms(B, torch.zeros(3, 1), 0.5), "scores must have shape"),
        (lambda: nms(B.long(), S, 0.5), "boxes must be a floating"),
        (lambda: nms(B, S.long(), 0.5), "scores must have the dtype of boxes"),
        (lambda: nms(B, S.double(), 0.5), "scores must have the dtype of boxes"),
        (lambda: nms(torch.tensor([[0.0, 0, float("nan"), 1]]), torch.zeros(1), 0.5), "boxes contains NaN"),
        (
            lambda: nms(torch.tensor([[0.0, 0, float("inf"), 1]]), torch.zeros(1), 0.5),
            "boxes contains NaN or inf",
        ),
        (lambda: nms(B, torch.tensor([0.0, float("nan"), 1]), 0.5), "scores contains NaN"),
        (lambda: nms(B, S, 1.5), r"iou_threshold must be in \[0, 1\]"),
        (lambda: nms(B, S, -0.1), r"iou_threshold must be in \[0, 1\]"),
        (lambda: nms(B, S, float("nan")), r"iou_threshold must be in \[0, 1\]"),
        (lambda: nms(B, S, "0.5"), "iou_threshold must be a real number"),
        (lambda: nms(B, S, 0.5, max_output=-1), "max_output must be an integer >= 0"),
        (lambda: nms_padded(B, S, 0.5, None), "max_output must be an integer >= 0"),
        (lambda: batched_nms(B, S, torch.zeros(3), 0.5), "groups must be an integer tensor"),
        (lambda: batched_nms(B, S, torch.zeros(2, dtype=torch.int64), 0.5), r"groups must have shape \(3,\)"),
        (lambda: batched_nms(B, S, [0, 0, 0], 0.5), "groups must be a torch.Tensor"),
        (lambda: nms(B.to("meta"), S, 0.5), "same device"),
    ],
)
def test_bad_input_names_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(3, 5), S, 0.5, -1), "boxes must have shape"),
        ((B, torch.zeros(2), 0.5, -1), "scores must have shape"),
        ((B, S, 2.0, -1), "iou_threshold must be in"),
        ((torch.tensor([[0.0, 0, float("nan"), 1]]), torch.zeros(1), 0.5, -1), "boxes contains NaN"),
        ((B, torch.tensor([0.0, float("nan"), 1]), 0.5, -1), "scores contains NaN"),
    ],
)
def test_cpp_checks_are_a_second_line(args, match):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.retina_unet.nms(*args)


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
def test_opcheck(device, d):
    boxes, scores = random_boxes(50, d, 11, side=30.0, dtype=torch.float32, device=device)
    groups = torch.arange(50, device=device) % 3
    ops = torch.ops.retina_unet
    torch.library.opcheck(ops.nms.default, (boxes, scores, 0.5, -1))
    torch.library.opcheck(ops.batched_nms.default, (boxes, scores, groups, 0.5, 10))
    torch.library.opcheck(ops.nms_padded.default, (boxes, scores, 0.5, 20))
    torch.library.opcheck(ops.batched_nms_padded.default, (boxes, scores, groups, 0.5, 20))


@cpu_and_cuda()
def test_torch_compile(device):
    def postprocess(boxes, scores, labels):
        keep = nms(boxes, scores * 2.0, 0.5)
        per_class = batched_nms(boxes, scores, labels, 0.5)
        padded, num = nms_padded(boxes, scores, 0.5, 8)
        return boxes[keep].sum(), per_class, padded, num

    boxes, scores = random_boxes(200, 3, 5, side=40.0, dtype=torch.float32, device=device)
    labels = torch.arange(200, device=device) % 4
    compiled = torch.compile(postprocess, backend="aot_eager", dynamic=False)
    for got, want in zip(compiled(boxes, scores, labels), postprocess(boxes, scores, labels), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_reference_backend_switch():
    boxes, scores = random_boxes(300, 3, 6, side=50.0, dtype=torch.float32)
    groups = torch.arange(300) % 2
    with reference_ops():
        ref = (
            nms(boxes, scores, 0.3),
            batched_nms(boxes, scores, groups, 0.3),
            nms_padded(boxes, scores, 0.3, 9),
        )
    assert torch.equal(ref[0], nms(boxes, scores, 0.3))
    assert torch.equal(ref[1], batched_nms(boxes, scores, groups, 0.3))
    assert all(torch.equal(a, b) for a, b in zip(ref[2], nms_padded(boxes, scores, 0.3, 9), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sparse", "clustered"])
def test_large_benchmark_workloads_match_reference(kind):
    from benchmarks.box_workloads import make_workload

    for d, n in ((2, 10_000), (3, 5_000)):
        boxes, scores, groups = make_workload(kind, n, d, n_groups=7, dtype=torch.float64)
        assert torch.equal(nms(boxes, scores, 0.5), nms_reference(boxes, scores, 0.5))
        assert torch.equal(
            batched_nms(boxes, scores, groups, 0.5), batched_nms_reference(boxes, scores, groups, 0.5)
        )


@pytest.mark.cuda
@pytest.mark.parametrize("d", [2, 3])
def test_padded_variants_capture_in_a_cuda_graph(d):
    # Capture fails on any device synchronisation, so this pins "sync-free".
    boxes, scores = random_boxes(3000, d, 21, side=200.0, dtype=torch.float32, device="cuda")
    groups = (torch.arange(3000, device="cuda") * 7) % 5
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (allocator, cub workspaces)
        nms_padded(boxes, scores, 0.5, 100)
        batched_nms_padded(boxes, scores, groups, 0.5, 100)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        keep, num = nms_padded(boxes, scores, 0.5, 100)
        bkeep, bnum = batched_nms_padded(boxes, scores, groups, 0.5, 100)
    for seed in (21, 22):
        new_boxes, new_scores = random_boxes(3000, d, seed, side=200.0, dtype=torch.float32, device="cuda")
        boxes.copy_(new_boxes)
        scores.copy_(new_scores)
        graph.replay()
        torch.cuda.synchronize()
        want = nms(boxes, scores, 0.5, max_output=100)
        assert int(num) == len(want) and torch.equal(keep[: len(want)], want)
        want = batched_nms(boxes, scores, groups, 0.5, max_output=100)
        assert int(bnum) == len(want) and torch.equal(bkeep[: len(want)], want)
