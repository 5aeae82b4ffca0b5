"""NMS properties (hypothesis): the greedy definition, and invariances of the kept set."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from retina_unet.ops import batched_nms, box_iou, nms
from retina_unet.ops.reference import batched_nms_reference, nms_reference
from tests.conftest import cpu_and_cuda

# Dyadic thresholds (see test_nms.test_integer_boxes_match_reference_in_every_dtype).
THRESHOLDS = st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 1.0])


@st.composite
def box_sets(draw, max_n: int = 40, distinct_scores: bool = False):
    """Integer boxes on a small grid (many overlaps, exact in float32) and their scores."""
    d = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(0, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    side = draw(st.sampled_from([8, 16, 64]))
    lo = torch.randint(0, side, (n, d), generator=g)
    ext = torch.randint(-1, 9, (n, d), generator=g)  # some degenerate and inverted boxes
    boxes = torch.cat([lo, lo + ext], 1).double()
    if distinct_scores:
        scores = torch.randperm(n, generator=g).double()
    else:
        scores = torch.randint(0, 4, (n,), generator=g).double()  # many ties
    return boxes, scores


@cpu_and_cuda()
@given(data=box_sets(), t=THRESHOLDS, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_equals_reference_and_greedy_definition(device, data, t, dtype):
    boxes, scores = data
    keep = nms(boxes.to(device, dtype), scores.to(device, dtype), t).cpu()
    assert torch.equal(keep, nms_reference(boxes, scores, t))
    iou = box_iou(boxes, boxes)
    kept = torch.zeros(len(boxes), dtype=torch.bool)
    kept[keep] = True
    # kept boxes pairwise IoU <= t
    sub = iou[keep][:, keep]
    assert (sub.fill_diagonal_(0) <= t).all()
    # every suppressed box has IoU > t with a kept box ranked before it
    rank = torch.empty(len(boxes), dtype=torch.long)
    rank[torch.sort(scores, descending=True, stable=True).indices] = torch.arange(len(boxes))
    for j in torch.nonzero(~kept).flatten().tolist():
        earlier = kept & (rank < rank[j])
        assert (iou[j][earlier] > t).any()
    # idempotent
    assert torch.equal(keep[nms(boxes[keep], scores[keep], t)], keep)


@given(data=box_sets(distinct_scores=True), t=THRESHOLDS, seed=st.integers(0, 1000))
def test_permutation_equivariant(data, t, seed):
    boxes, scores = data
    perm = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(perm[nms(boxes[perm], scores[perm], t)], nms(boxes, scores, t))


@given(
    data=box_sets(),
    t=THRESHOLDS,
    shift=st.integers(-1000, 1000),
    scale_exp=st.integers(-4, 4),
    seed=st.integers(0, 1000),
)
def test_invariant_to_translation_scaling_axis_permutation(data, t, shift, scale_exp, seed):
    boxes, scores = data
    base = nms(boxes, scores, t)
    assert torch.equal(nms(boxes + shift, scores, t), base)  # integer shift: exact
    assert torch.equal(nms(boxes * 2.0**scale_exp, scores, t), base)  # power of two: exact
    d = boxes.shape[1] // 2
    p = torch.randperm(d, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(nms(boxes[:, torch.cat([p, p + d])], scores, t), base)


@given(data=box_sets(), t=THRESHOLDS, lo=st.integers(-5, 5), ext=st.integers(1, 5), axis=st.integers(0, 2))
def test_3d_with_shared_extent_equals_2d(data, t, lo, ext, axis):
    boxes, scores = data
    if boxes.shape[1] != 4:
        boxes = boxes[:, [0, 1, 3, 4]]
    n = boxes.shape[0]
    cols = [boxes[:, 0], boxes[:, 1]]
    cols.insert(axis, torch.full((n,), float(lo), dtype=boxes.dtype))
    his = [boxes[:, 2], boxes[:, 3]]
    his.insert(axis, torch.full((n,), float(lo + ext), dtype=boxes.dtype))
    boxes3 = torch.stack(cols + his, 1)
    assert torch.equal(nms(boxes3, scores, t), nms(boxes, scores, t))


@cpu_and_cuda()
@given(data=box_sets(max_n=60), t=THRESHOLDS, k=st.integers(1, 5), max_output=st.none() | st.integers(0, 30))
def test_batched_is_per_group_nms(device, data, t, k, max_output):
    boxes, scores = data
    groups = torch.randint(-k, k, (len(boxes),), generator=torch.Generator().manual_seed(k))
    keep = batched_nms(boxes.to(device), scores.to(device), groups.to(device), t, max_output).cpu()
    assert torch.equal(keep, batched_nms_reference(boxes, scores, groups, t, max_output))
    # the same as running nms per group and merging by (score desc, index asc)
    parts = [torch.nonzero(groups == g).flatten() for g in groups.unique()]
    merged = torch.cat(
        [idx[nms(boxes[idx], scores[idx], t)] for idx in parts] or [torch.zeros(0, dtype=torch.long)]
    )
    order = sorted(merged.tolist(), key=lambda i: (-scores[i].item(), i))
    assert keep.tolist() == order[:max_output]
