"""The vectorised WBC (retina_unet.inference.wbc) equals the sequential reference per group."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retina_unet.inference.wbc import weighted_box_clustering, weighted_box_clustering_batched
from tests.conftest import cpu_and_cuda
from tests.wbc_reference import weighted_box_clustering_reference


def _case(seed: int, n: int, d: int, n_groups: int, tie_levels: int, grid: bool, device: str = "cpu"):
    """Boxes clustered around a few centres (so clusters have several members), optional score ties
    (``tie_levels`` distinct score values) and integer-grid coordinates (exact IoU ties, degenerate
    boxes)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 4 + 1), d, generator=g, dtype=torch.float64) * 40
    which = torch.randint(0, centres.shape[0], (n,), generator=g)
    lo = centres[which] + torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    ext = torch.rand(n, d, generator=g, dtype=torch.float64) * 8
    if grid:
        lo, ext = lo.round(), ext.round()  # zero extents included: degenerate boxes
    else:
        ext = ext + 0.5
    boxes = torch.cat([lo, lo + ext], 1).float()
    if tie_levels:
        scores = (torch.randint(1, tie_levels + 1, (n,), generator=g).double() / tie_levels).float()
    else:
        scores = torch.rand(n, generator=g).float()
    members = torch.randint(0, 4, (n,), generator=g)
    groups = torch.randint(0, n_groups, (n,), generator=g)
    return boxes.to(device), scores.to(device), members.to(device), groups.to(device)


def _check_equal(boxes, scores, members, groups, n_expected, iou, min_score):
    ob, os_, og = weighted_box_clustering_batched(boxes, scores, members, groups, n_expected, iou, min_score)
    got_b, got_s, want_b, want_s = [], [], [], []
    for gid in torch.unique(groups).tolist():  # ascending: the batched output's group order
        sel = groups == gid
        rb, rs = weighted_box_clustering_reference(boxes[sel].cpu(), scores[sel].cpu(), members[sel].cpu(),
                                                   n_expected, iou, min_score)
        want_b.append(rb)
        want_s.append(rs)
        got_b.append(ob[og == gid].cpu())
        got_s.append(os_[og == gid].cpu())
        assert rs.shape[0] == int((og == gid).sum()), f"group {gid}: cluster count differs"
    assert set(og.tolist()) <= set(torch.unique(groups).tolist())
    width = boxes.shape[1]
    cat = lambda xs, shape: torch.cat(xs) if xs else torch.zeros(shape)  # noqa: E731
    torch.testing.assert_close(cat(got_s, (0,)), cat(want_s, (0,)), rtol=0, atol=1e-6)
    torch.testing.assert_close(cat(got_b, (0, width)), cat(want_b, (0, width)), rtol=1e-6, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 60),
    d=st.sampled_from([2, 3]),
    n_groups=st.integers(1, 4),
    tie_levels=st.sampled_from([0, 3, 10]),
    grid=st.booleans(),
    iou=st.sampled_from([1e-5, 0.1, 0.3, 0.5]),
    n_expected=st.integers(1, 5),
    min_score=st.sampled_from([0.0, 0.01, 0.2]),
)
def test_batched_equals_sequential_reference(seed, n, d, n_groups, tie_levels, grid, iou, n_expected, min_score):
    boxes, scores, members, groups = _case(seed, n, d, n_groups, tie_levels, grid)
    _check_equal(boxes, scores, members, groups, n_expected, iou, min_score)


@pytest.mark.parametrize("d", [2, 3])
def test_single_group_wrapper_equals_reference(d):
    boxes, scores, members, _ = _case(7, 80, d, 1, 10, False)
    b, s = weighted_box_clustering(boxes, scores, members, 4, 0.2)
    rb, rs = weighted_box_clustering_reference(boxes, scores, members, 4, 0.2)
    assert s.shape[0] > 3  # several clusters: the case exercises the clustering
    torch.testing.assert_close(s, rs, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, rb, rtol=1e-6, atol=1e-5)


def test_empty_input_gives_empty_float32():
    for width in (4, 6):
        b, s, g = weighted_box_clustering_batched(
            torch.zeros(0, width), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64), 2)
        assert b.shape == (0, width) and s.shape == (0,) and g.shape == (0,)
        assert b.dtype == torch.float32 and s.dtype == torch.float32


def test_degenerate_box_is_its_own_cluster():
    # A zero-area box has IoU 0 with everything, itself included: it still forms its own cluster.
    boxes = torch.tensor([[0.0, 0, 4, 4], [1.0, 1, 1, 3], [0.0, 0, 4, 3]])
    args = (boxes, torch.tensor([0.9, 0.5, 0.4]), torch.tensor([0, 1, 1]))
    b, s, _ = weighted_box_clustering_batched(*args, torch.zeros(3, dtype=torch.int64), 2, 1e-5, 0.0)
    rb, rs = weighted_box_clustering_reference(*args, 2, 1e-5, 0.0)
    assert rs.shape[0] == 2
    torch.testing.assert_close(s, rs, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, rb, rtol=1e-6, atol=1e-5)


def test_groups_never_merge():
    # Two identical boxes in different groups: two clusters, each with one member of two expected.
    boxes = torch.tensor([[0.0, 0, 4, 4], [0.0, 0, 4, 4]])
    b, s, g = weighted_box_clustering_batched(boxes, torch.tensor([0.8, 0.6]), torch.tensor([0, 1]),
                                              torch.tensor([5, 2]), 2, 1e-5, 0.0)
    assert g.tolist() == [2, 5]
    torch.testing.assert_close(s, torch.tensor([0.3, 0.4]))


@cpu_and_cuda()
def test_device_result_equals_cpu_reference(device):
    boxes, scores, members, groups = _case(3, 200, 3, 6, 0, False, device)
    _check_equal(boxes, scores, members, groups, 4, 0.1, 0.01)
