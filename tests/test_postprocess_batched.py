"""Batched post-processing (models.postprocess.select_detections_batched) equals the per-image path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retina_unet.models.postprocess import select_detections, select_detections_batched, top_candidates
from tests.conftest import cpu_and_cuda


def _candidates(seed: int, num_images: int, n_max: int, d: int, n_classes: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, n_max + 1, (num_images,), generator=g)
    n = int(sizes.sum())
    centres = torch.rand(n, d, generator=g) * 60 - 5  # some boxes cross the image border
    ext = torch.rand(n, d, generator=g) * 12
    ext[torch.rand(n, generator=g) < 0.05] = 0.001  # thinner than min_box_size: dropped
    boxes = torch.cat([centres - ext / 2, centres + ext / 2], 1)
    scores = torch.randperm(n, generator=g).float() / max(n, 1)  # distinct: no tie-order ambiguity
    labels = torch.randint(1, n_classes + 1, (n,), generator=g)
    image_ids = torch.repeat_interleave(torch.arange(num_images), sizes)
    perm = torch.randperm(n, generator=g)  # images interleaved in the flat list
    return (boxes[perm].to(device), scores[perm].to(device), labels[perm].to(device),
            image_ids[perm].to(device), sizes)


def _compare(seed, num_images, n_max, d, n_classes, top_k, max_det, device="cpu", iou=0.3):
    boxes, scores, labels, image_ids, _ = _candidates(seed, num_images, n_max, d, n_classes, device)
    size = (50,) * d
    args = (size, 0.1, top_k, iou, max_det, 0.01)
    got = select_detections_batched(boxes, scores, labels, image_ids, num_images, *args).to_list()
    assert len(got) == num_images
    for i in range(num_images):
        sel = image_ids == i
        want = select_detections(boxes[sel], scores[sel], labels[sel], *args)
        for key in ("boxes", "scores", "labels"):
            assert got[i][key].dtype == want[key].dtype, key
            torch.testing.assert_close(got[i][key].cpu(), want[key].cpu(), rtol=0, atol=0, msg=f"image {i} {key}")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_images=st.integers(1, 4),
    n_max=st.integers(0, 80),
    d=st.sampled_from([2, 3]),
    n_classes=st.integers(1, 3),
    top_k=st.sampled_from([5, 30, 1000]),
    max_det=st.sampled_from([0, 1, 7, 100]),
)
def test_batched_equals_per_image(seed, num_images, n_max, d, n_classes, top_k, max_det):
    _compare(seed, num_images, n_max, d, n_classes, top_k, max_det)


def test_padding_and_counts():
    boxes, scores, labels, image_ids, _ = _candidates(1, 3, 40, 2, 2)
    det = select_detections_batched(boxes, scores, labels, image_ids, 3, (50, 50), 0.1, 1000, 0.3, 5)
    assert det.boxes.shape == (3, 5, 4) and det.scores.shape == (3, 5) and det.counts.shape == (3,)
    for i, k in enumerate(det.counts.tolist()):
        assert (det.labels[i, k:] == -1).all() and (det.scores[i, k:] == 0).all()
        assert (det.scores[i, :k].diff() <= 0).all()


def test_empty_batch_and_no_candidates():
    det = select_detections_batched(torch.zeros(0, 6), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                                    torch.zeros(0, dtype=torch.int64), 2, (8, 8, 8), 0.1, 10, 0.3, 4)
    out = det.to_list()
    assert [o["boxes"].shape for o in out] == [(0, 6), (0, 6)]


def test_top_candidates_masks_below_floor():
    s = torch.tensor([[0.05, 0.9, 0.2, 0.7], [0.01, 0.02, 0.03, 0.5]])
    v, i, ok = top_candidates(s, 0.1, 3)
    assert i[0].tolist() == [1, 3, 2] and ok[0].tolist() == [True, True, True]
    assert i[1, 0].item() == 3 and ok[1].tolist() == [True, False, False]


@cpu_and_cuda()
@pytest.mark.parametrize("d", [2, 3])
def test_device_equals_per_image(device, d):
    _compare(5, 4, 300, d, 3, 200, 50, device)


@pytest.mark.cuda
@pytest.mark.parametrize("d", [2, 3])
def test_batched_postprocess_captures_in_a_cuda_graph(d):
    # Capture fails on any host sync or pageable copy: this pins "no sync until results are read".
    boxes, scores, labels, image_ids, _ = _candidates(8, 4, 500, d, 3, "cuda")
    args = ((64,) * d, 0.1, 300, 0.3, 40, 0.01)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (allocator, sort workspaces)
        select_detections_batched(boxes, scores, labels, image_ids, 4, *args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        det = select_detections_batched(boxes, scores, labels, image_ids, 4, *args)
    for seed in (9, 10):
        nb, ns, nl, _, _ = _candidates(seed, 4, 500, d, 3, "cuda")
        n = min(nb.shape[0], boxes.shape[0])
        boxes[:n].copy_(nb[:n])
        scores[:n].copy_(ns[:n])
        labels[:n].copy_(nl[:n])
        graph.replay()
        torch.cuda.synchronize()
        want = select_detections_batched(boxes, scores, labels, image_ids, 4, *args).to_list()
        for i, got in enumerate(det.to_list()):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(got[key], want[i][key])
