"""Inference: TTA flip round trips and invariance, WBC hand cases, Predictor switches."""

from __future__ import annotations

import pytest
import torch

from retina_unet.inference import Predictor, flip_boxes, flip_images, mirror_views, weighted_box_clustering


def test_mirror_views():
    assert mirror_views(2) == [(), (0,), (1,), (0, 1)]
    assert mirror_views(3) == [(), (0,), (1,), (0, 1)]
    assert len(mirror_views(3, 8, axes=(0, 1, 2))) == 8
    assert mirror_views(2, 1) == [()]
    with pytest.raises(ValueError):
        mirror_views(2, axes=(2,))


@pytest.mark.parametrize("dim", [2, 3])
def test_flip_boxes_twice_is_identity(dim):
    g = torch.Generator().manual_seed(dim)
    shape = (40, 50, 30)[:dim]
    lo = torch.randint(0, 20, (7, dim), generator=g).float()
    boxes = torch.cat([lo, lo + torch.randint(1, 10, (7, dim), generator=g)], 1)
    for view in mirror_views(dim, 8, axes=tuple(range(dim))):
        once = flip_boxes(boxes, view, shape)
        assert torch.equal(flip_boxes(once, view, shape), boxes)
        assert (once[:, dim:] > once[:, :dim]).all()


def test_flip_boxes_matches_flipped_mask_extent():
    img = torch.zeros(1, 1, 20, 30)
    img[0, 0, 2:7, 5:19] = 1  # pixels 2..6, 5..18 -> box [2, 5, 7, 19)
    box = torch.tensor([[2.0, 5, 7, 19]])
    for view in mirror_views(2):
        f = flip_images(img, view)[0, 0]
        ys, xs = torch.nonzero(f, as_tuple=True)
        expected = torch.tensor([[ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]]).float()
        assert torch.equal(flip_boxes(box, view, (20, 30)), expected)


class ThresholdDetector(torch.nn.Module):
    """Flip-equivariant dummy: one box around the pixels > 0.5, score = their mean, class 1."""

    def __init__(self, spatial_dims: int, bias: float = 0.0):
        super().__init__()
        self.spatial_dims, self.num_classes, self.bias = spatial_dims, 2, bias

    def predict(self, images):
        out = []
        for im in images:
            on = im[0] > 0.5
            if not on.any():
                out.append(
                    {
                        "boxes": torch.zeros(0, 2 * self.spatial_dims),
                        "scores": torch.zeros(0),
                        "labels": torch.zeros(0, dtype=torch.int64),
                    }
                )
                continue
            idx = torch.nonzero(on)
            box = torch.cat([idx.min(0).values, idx.max(0).values + 1]).float()[None]
            out.append(
                {
                    "boxes": box,
                    "scores": (im[0][on].mean() * 0.5 + self.bias).reshape(1),
                    "labels": torch.ones(1, dtype=torch.int64),
                    "seg": torch.stack([~on, on]).float(),
                }
            )
        return out


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("merge", ["wbc", "nms", "none"])
def test_predictions_of_equivariant_model_are_tta_invariant(dim, merge):
    shape = (24, 20, 16)[:dim]
    images = torch.zeros(2, 1, *shape)
    images[0, 0, 3:9, 4:15] = 0.8
    images[1, 0, 10:20, 2:6] = 0.9
    plain = Predictor([ThresholdDetector(dim)], tta=False, merge="none").predict(images)
    tta = Predictor([ThresholdDetector(dim)], tta=True, merge=merge).predict(images)
    for p, q in zip(plain, tta, strict=False):
        if merge == "none":  # 4 identical copies
            assert len(q["boxes"]) == 4
            assert torch.allclose(q["boxes"], p["boxes"].expand(4, -1))
        else:
            assert torch.allclose(q["boxes"], p["boxes"], atol=1e-5)
            assert torch.allclose(q["scores"], p["scores"], atol=1e-6)
        assert torch.allclose(q["seg"], p["seg"])


def test_epoch_ensemble_averages_scores():
    images = torch.zeros(1, 1, 16, 16)
    images[0, 0, 2:8, 2:8] = 0.8  # score 0.4 (+ bias)
    pred = Predictor([ThresholdDetector(2, 0.0), ThresholdDetector(2, 0.2)], tta=True, merge="wbc").predict(
        images
    )
    assert pred[0]["scores"].tolist() == pytest.approx([0.5])  # (4 * 0.4 + 4 * 0.6) / 8


# --- WBC ----------------------------------------------------------------------------------------
def test_wbc_single_box_full_ensemble_keeps_score():
    b, s = weighted_box_clustering(
        torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.8]), torch.tensor([0]), 1
    )
    assert b.tolist() == [[0, 0, 10, 10]] and s.tolist() == pytest.approx([0.8])


def test_wbc_missing_members_count_as_zero():
    # one of 4 expected members predicted: score 0.8 * w / (w + 3 w) = 0.2
    b, s = weighted_box_clustering(
        torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.8]), torch.tensor([2]), 4
    )
    assert s.tolist() == pytest.approx([0.2])


def test_wbc_hand_case_weights_by_score_iou_and_area():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 12], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.6, 0.5])
    members = torch.tensor([0, 1, 0])
    b, s = weighted_box_clustering(boxes, scores, members, 2)
    # cluster 1: top box (w = 1 * 100), second box IoU = 100/120, area 120 -> w = 100.
    w1, w2 = 100.0, (100 / 120) * 120
    score = (0.9 * w1 + 0.6 * w2) / (w1 + w2)
    hi_x = (10 * 0.9 * w1 + 12 * 0.6 * w2) / (0.9 * w1 + 0.6 * w2)
    assert s[0].item() == pytest.approx(score)
    assert b[0].tolist() == pytest.approx([0, 0, 10, hi_x])
    # cluster 2: one of 2 members -> 0.5 / 2
    assert s[1].item() == pytest.approx(0.25)
    assert b[1].tolist() == pytest.approx([50, 50, 60, 60])


def test_wbc_drops_low_clusters_and_handles_empty():
    b, s = weighted_box_clustering(torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([0.04]), torch.tensor([0]), 4)
    assert len(s) == 0  # 0.01 after averaging with 3 missing members: not > min_score
    b, s = weighted_box_clustering(torch.zeros(0, 6), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 4)
    assert b.shape == (0, 6)


def test_wbc_3d():
    boxes = torch.tensor([[0.0, 0, 0, 10, 10, 10], [1.0, 0, 0, 11, 10, 10]])
    b, s = weighted_box_clustering(boxes, torch.tensor([0.8, 0.8]), torch.tensor([0, 1]), 2)
    assert len(s) == 1 and s.item() == pytest.approx(0.8)
    assert 0 < b[0, 0].item() < 1


def test_predictor_rejects_bad_merge():
    with pytest.raises(ValueError, match="merge"):
        Predictor([ThresholdDetector(2)], merge="vote")


def test_wbc_unequal_weights_hand_computed():
    """Three boxes in one cluster, each with a different IoU, area and score; one member missing.

    Input order is B, C, A so that the top box has to be found by score. Members: A -> 0, B -> 1,
    C -> 1 (two boxes from one member), ``n_expected = 3``: 2 distinct members, n_missing = 1.

    - A = [0, 0, 10, 10], s = 0.9, area 100, IoU(A, A) = 1            -> w_A = 100
    - B = [5, 0, 15, 10], s = 0.6, area 100, inter 50, union 150, IoU 1/3    -> w_B = 100/3
    - C = [2, 2, 12, 14], s = 0.3, area 120, inter 8*8 = 64, union 156, IoU 16/39 -> w_C = 640/13

    sum w = 100 + 100/3 + 640/13 = 7120/39, mean w = 7120/117,
    sum s*w = 90 + 20 + 192/13 = 1622/13.
    score = (1622/13) / (7120/39 + 7120/117) = (1622/13) / (28480/117) = 7299/14240 ~ 0.51257.
    (With all weights 1: 1.8 / (3 + 1) = 0.45; without the missing member: 1622*3/7120 ~ 0.683.)
    Coordinates, weighted by s*w and divided by 1622/13:
    x1 = (5*20 + 2*192/13) * 13/1622 = 842/811,  y1 = (2*192/13) * 13/1622 = 192/811,
    x2 = (10*90 + 15*20 + 12*192/13) * 13/1622 = 8952/811,
    y2 = (10*90 + 10*20 + 14*192/13) * 13/1622 = 8494/811.
    A far box D = [40, 40, 50, 50] (member 0, s = 0.8) is its own cluster, 2 of 3 members missing: 0.8 * w / (w + 2 w) = 0.8/3.
    """
    boxes = torch.tensor([[5.0, 0, 15, 10], [2.0, 2, 12, 14], [40.0, 40, 50, 50], [0.0, 0, 10, 10]])
    scores = torch.tensor([0.6, 0.3, 0.8, 0.9])
    members = torch.tensor([1, 1, 0, 0])
    b, s = weighted_box_clustering(boxes, scores, members, 3)
    assert s.tolist() == pytest.approx([7299 / 14240, 0.8 / 3], rel=1e-6)
    assert b[0].tolist() == pytest.approx([842 / 811, 192 / 811, 8952 / 811, 8494 / 811], rel=1e-6)
    assert b[1].tolist() == pytest.approx([40, 40, 50, 50])


# --- Predictor merging by hand ------------------------------------------------------------------
class FixedDetector(torch.nn.Module):
    """Returns the same given predictions for every image (records whether it ran in eval mode)."""

    def __init__(self, boxes, scores, labels, seg_value=None, spatial_dims=2):
        super().__init__()
        self.spatial_dims, self.num_classes = spatial_dims, 2
        self.pred = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 2 * spatial_dims),
                     "scores": torch.tensor(scores, dtype=torch.float32),
                     "labels": torch.tensor(labels, dtype=torch.int64)}
        self.seg_value, self.modes = seg_value, []

    def predict(self, images):
        self.modes.append(self.training)
        out = []
        for _ in images:
            p = {k: v.clone() for k, v in self.pred.items()}
            if self.seg_value is not None:
                p["seg"] = torch.full((3, *images.shape[2:]), self.seg_value)
            out.append(p)
        return out


A, B, C, D = [0.0, 0, 10, 10], [0.0, 0, 10, 12], [0.0, 5, 10, 15], [0.0, 20, 10, 30]


def test_predictor_nms_merge_per_class_by_hand():
    """Class 1: A 0.9, B 0.8 (IoU(A, B) = 100/120), C 0.7 (IoU(A, C) = 50/150 = 1/3), D 0.6 (apart);
    class 2: A 0.5. NMS per class at 0.3 keeps A, D (and class 2's A: other class); at 0.4 also C."""
    det = FixedDetector([A, B, C, D, A], [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 1, 1, 2])
    img = torch.zeros(1, 1, 32, 32)
    p = Predictor([det], tta=False, merge="nms", nms_iou=0.3).predict(img)[0]
    assert p["scores"].tolist() == pytest.approx([0.9, 0.6, 0.5])
    assert p["labels"].tolist() == [1, 1, 2] and p["boxes"].tolist() == [A, D, A]
    p = Predictor([det], tta=False, merge="nms", nms_iou=0.4).predict(img)[0]
    assert p["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5]) and p["labels"].tolist() == [1, 1, 1, 2]
    p = Predictor([det], tta=False, merge="nms", nms_iou=0.4, max_detections=2).predict(img)[0]
    assert p["scores"].tolist() == pytest.approx([0.9, 0.7]) and p["boxes"].tolist() == [A, C]


def test_predictor_wbc_merge_counts_members_per_model_and_class():
    """Two models, no TTA: 2 members. Class 1: A 0.8 (model 0) and A 0.4 (model 1), equal weights:
    (0.8 + 0.4) / 2 = 0.6. Class 2: A 0.6 from model 0 only, one member missing: 0.6 / 2 = 0.3
    (it is not clustered with class 1's A)."""
    m0 = FixedDetector([A, A], [0.8, 0.6], [1, 2])
    m1 = FixedDetector([A], [0.4], [1])
    pred = Predictor([m0, m1], tta=False, merge="wbc")
    assert pred.n_members == 2
    p = pred.predict(torch.zeros(2, 1, 32, 32))
    for q in p:  # both images
        assert q["scores"].tolist() == pytest.approx([0.6, 0.3]) and q["labels"].tolist() == [1, 2]
        assert torch.allclose(q["boxes"], torch.tensor([A, A]))
    # wbc_iou reaches the clustering: A (0.8) and C (0.4) overlap with IoU 1/3: one cluster at the
    # default threshold, two at 0.5 (each from one of the 2 members: 0.8 / 2 and 0.4 / 2).
    m1c = FixedDetector([C], [0.4], [1])
    q = Predictor([FixedDetector([A], [0.8], [1]), m1c], tta=False, merge="wbc", wbc_iou=0.5).predict(
        torch.zeros(1, 1, 32, 32))[0]
    assert q["scores"].tolist() == pytest.approx([0.4, 0.2]) and torch.allclose(q["boxes"], torch.tensor([A, C]))
    q = Predictor([FixedDetector([A], [0.8], [1]), m1c], tta=False, merge="wbc").predict(
        torch.zeros(1, 1, 32, 32))[0]
    assert len(q["scores"]) == 1


def test_predictor_none_merge_concatenates_sorted_and_averages_seg():
    m0 = FixedDetector([A, D], [0.3, 0.9], [1, 2], seg_value=0.2)
    m1 = FixedDetector([C], [0.5], [1], seg_value=0.6)
    p = Predictor([m0, m1], tta=False, merge="none").predict(torch.zeros(1, 1, 32, 32))[0]
    assert p["scores"].tolist() == pytest.approx([0.9, 0.5, 0.3]) and p["labels"].tolist() == [2, 1, 1]
    assert p["boxes"].tolist() == [D, C, A]
    assert p["seg"].shape == (3, 32, 32) and torch.allclose(p["seg"], torch.full((3, 32, 32), 0.4))
    p = Predictor([m0, m1], tta=False, merge="none", max_detections=1).predict(torch.zeros(1, 1, 32, 32))[0]
    assert p["scores"].tolist() == pytest.approx([0.9])
    # nothing predicted by anyone: empty outputs of the right widths
    empty = FixedDetector([], [], [])
    for merge in ("wbc", "nms", "none"):
        q = Predictor([empty, empty], tta=False, merge=merge).predict(torch.zeros(1, 1, 8, 8))[0]
        assert q["boxes"].shape == (0, 4) and q["scores"].shape == (0,) and q["labels"].shape == (0,)


def test_predictor_members_views_and_model_modes():
    m0, m1 = FixedDetector([A], [0.8], [1]), FixedDetector([A], [0.8], [1])
    assert Predictor([m0, m1], tta=True).n_members == 8  # 2 models x 4 mirror views
    assert Predictor([m0], tta=True, max_views=2).n_members == 2
    assert Predictor([m0], tta=True, mirror_axes=(1,)).views == [(), (1,)]
    assert Predictor([m0], tta=False).views == [()]
    m0.train()
    m1.eval()
    Predictor([m0, m1], tta=False, merge="none").predict(torch.zeros(1, 1, 8, 8))
    assert m0.modes == [False] and m1.modes == [False]  # predicted in eval mode ...
    assert m0.training and not m1.training  # ... and each left as it was
    with pytest.raises(ValueError, match="at least one model"):
        Predictor([])
    with pytest.raises(ValueError, match="spatial_dims"):
        Predictor([m0, FixedDetector([0.0, 0, 0, 1, 1, 1], [0.5], [1], spatial_dims=3)])


def test_mirror_views_defaults_and_errors():
    assert mirror_views(3, axes=(0, 1, 2)) == [(), (0,), (1,), (2,)]  # default max_views 4
    with pytest.raises(ValueError, match=r"mirror axes \(2,\) outside 0\.\.1"):
        mirror_views(2, axes=(2,))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        mirror_views(4)


def test_wbc_sub_pixel_boxes_weights_and_coordinates():
    """Areas below 1 must weigh by their true size. A = [0, 0, .5, .5] (s .9, area 1/4), B =
    [0, 0, .5, .25] (s .3, area 1/8, IoU 1/2 -> w 1/16), one member each of 2:
    score = (.9/4 + .3/16) / (1/4 + 1/16) = .24375 / .3125 = .78;
    hi_1 = (.5 * .225 + .25 * .01875) / .24375 = 0.48076923...
    A lone box [0, 0, 1, 1] with score .5 (sum s*w = .5 < 1) keeps its coordinates."""
    b, s = weighted_box_clustering(torch.tensor([[0.0, 0, 0.5, 0.5], [0.0, 0, 0.5, 0.25]]),
                                   torch.tensor([0.9, 0.3]), torch.tensor([0, 1]), 2)
    assert s.tolist() == pytest.approx([0.78], rel=1e-6)
    assert b[0].tolist() == pytest.approx([0, 0, 0.5, (0.5 * 0.225 + 0.25 * 0.01875) / 0.24375], rel=1e-6)
    b, s = weighted_box_clustering(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.5]), torch.tensor([0]), 1)
    assert b.tolist() == [[0, 0, 1, 1]] and s.tolist() == [0.5]


def test_wbc_thresholds_are_strict():
    # IoU(A, C) = 50/150 = 1/3 exactly: not > 1/3, so two clusters (each 1 of 2 members)
    b, s = weighted_box_clustering(torch.tensor([A, C], dtype=torch.float64), torch.tensor([0.8, 0.4]),
                                   torch.tensor([0, 1]), 2, iou_threshold=1 / 3)
    assert s.tolist() == pytest.approx([0.4, 0.2])
    # merged score exactly min_score (area 1, 0.04 / (1 + 3)) is dropped
    b, s = weighted_box_clustering(torch.tensor([[0.0, 0, 1, 1]], dtype=torch.float64),
                                   torch.tensor([0.04], dtype=torch.float64), torch.tensor([0]), 4)
    assert 0.04 / 4 == 0.01 and s.shape == (0,) and b.shape == (0, 4)


def test_wbc_outputs_float32_of_the_input_width():
    for boxes in (torch.zeros(0, 6, dtype=torch.float64), torch.tensor([[0.0, 0, 0, 2, 2, 2]], dtype=torch.float64)):
        # empty input, and input whose only cluster is dropped (1 of 100 members: 0.5 / 100 <= 0.01)
        b, s = weighted_box_clustering(boxes, torch.full((len(boxes),), 0.5, dtype=torch.float64),
                                       torch.zeros(len(boxes), dtype=torch.int64), 100)
        assert b.shape == (0, 6) and s.shape == (0,) and b.dtype == s.dtype == torch.float32
    b, s = weighted_box_clustering(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 1)
    assert b.shape == (0, 4)  # a flat empty tensor: 2D width
    b, s = weighted_box_clustering(torch.tensor([[0.0, 0, 1, 1]], dtype=torch.float64),
                                   torch.tensor([0.5], dtype=torch.float64), torch.tensor([0]), 1)
    assert b.dtype == s.dtype == torch.float32


def test_predictor_defaults_and_single_member_passthrough():
    det = FixedDetector([A], [0.8], [1])
    pred = Predictor([det])
    assert pred.n_members == 4 and pred.merge == "wbc" and pred.num_classes == 2  # TTA (4 views), WBC
    # max_detections defaults to 100: 150 separate class-1 boxes of one member come out as 100
    many = FixedDetector([[0.0, 10 * i, 5, 10 * i + 5] for i in range(150)], [0.5] * 150, [1] * 150)
    p = Predictor([many], tta=False, merge="nms").predict(torch.zeros(1, 1, 8, 8))[0]
    assert len(p["scores"]) == 100
    # equal scores keep the models' order (a stable sort; torch's default sort reorders 17+ ties)
    assert p["boxes"][:, 1].tolist() == [10.0 * i for i in range(100)]
    # one member, merge "none": the model's own output, keys and all
    det.pred["extra"] = torch.tensor([7])
    p = Predictor([det], tta=False, merge="none").predict(torch.zeros(1, 1, 8, 8))[0]
    assert set(p) == {"boxes", "scores", "labels", "extra"} and p["extra"].tolist() == [7]
    with pytest.raises(ValueError, match="^Predictor needs at least one model$"):
        Predictor([])


def test_wbc_equal_scores_keep_input_order():
    """40 separate boxes with equal scores: the clusters come out in input order (stable sorts;
    torch's default sort reorders 17 or more ties)."""
    boxes = torch.tensor([[0.0, 10 * i, 5, 10 * i + 5] for i in range(40)])
    b, s = weighted_box_clustering(boxes, torch.full((40,), 0.5), torch.zeros(40, dtype=torch.int64), 1)
    assert torch.equal(b, boxes) and s.tolist() == [0.5] * 40


# --- the predict loop's batches, the run-config mapping, WBC's output contract and member counts --


def test_shape_batches_cut_runs_of_equal_shape():
    from retina_unet.inference.loop import shape_batches

    a, b = (1, 4, 4), (1, 5, 5)
    assert shape_batches([a] * 5, 2) == [[0, 1], [2, 3], [4]]
    assert shape_batches([a, a, b, a], 3) == [[0, 1], [2], [3]]  # a new shape starts a new batch
    assert shape_batches([a, b, b, b], 2) == [[0], [1, 2], [3]]
    assert shape_batches([], 4) == []


def test_predictor_for_config_uses_the_runs_test_time_settings():
    from types import SimpleNamespace

    from retina_unet.inference import predictor_for_config

    det = FixedDetector([[0.0, 0, 0, 1, 1, 1]], [0.5], [1], spatial_dims=3)
    cfg = SimpleNamespace(tta=True, merge="nms", tta_views=2, wbc_iou=0.3, nms_iou=0.4)
    p = predictor_for_config(cfg, [det])
    assert p.models == [det] and p.views == [(), (0,)] and p.merge == "nms"  # the first 2 views
    assert (p.wbc_iou, p.nms_iou) == (0.3, 0.4)
    assert predictor_for_config(cfg, [det], tta=False).views == [()]  # the caller's choice wins
    assert len(predictor_for_config(SimpleNamespace(**{**vars(cfg), "tta": False}), [det], tta=1).views) == 2


def test_predictor_default_views_are_at_most_4_of_the_8_mirrors_of_3_axes():
    det = FixedDetector([[0.0, 0, 0, 1, 1, 1]], [0.5], [1], spatial_dims=3)
    assert Predictor([det], mirror_axes=(0, 1, 2)).views == [(), (0,), (1,), (2,)]


def test_wbc_outputs_float32_boxes_and_scores_and_int64_groups_whatever_the_inputs():
    """Documented output dtypes, also under a float64 default dtype and with int32 groups."""
    from retina_unet.inference.wbc import weighted_box_clustering_batched

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for n in (0, 2):
            b, s, g = weighted_box_clustering_batched(
                torch.tensor([A, D][:n]).reshape(n, 4), torch.full((n,), 0.5), torch.zeros(n, dtype=torch.int32),
                torch.zeros(n, dtype=torch.int32), 1)
            assert (b.dtype, s.dtype, g.dtype) == (torch.float32, torch.float32, torch.int64)
            assert b.shape == (n, 4) and s.shape == g.shape == (n,)
    finally:
        torch.set_default_dtype(old)


def test_wbc_counts_distinct_members_in_large_clusters():
    """Two objects, 20 identical boxes each at score 0.6 from members 0 and 1 of 3: each cluster
    misses one member, so its score is 20 * 0.6 / (20 + 1) = 4/7 (equal weights). Sorting 40 boxes
    by cluster must keep them sorted by member (torch's default sort reorders 17+ ties)."""
    from retina_unet.inference.wbc import weighted_box_clustering_batched

    boxes = torch.tensor([A, D] * 20)
    members = torch.tensor([(i // 2) % 2 for i in range(40)])
    b, s, g = weighted_box_clustering_batched(boxes, torch.full((40,), 0.6), members, torch.zeros(40, dtype=torch.int64),
                                              3)
    assert b.tolist() == [A, D] and s.tolist() == pytest.approx([4 / 7, 4 / 7])


def test_wbc_member_count_restarts_in_each_cluster():
    """Member 0 alone predicts two objects twice each (n_expected 2): each cluster misses member 1.
    A: (0.9 + 0.8) / (2 + 1) = 0.5667; D: (0.7 + 0.6) / 3 = 0.4333 (equal weights)."""
    b, s = weighted_box_clustering(torch.tensor([A, A, D, D]), torch.tensor([0.9, 0.8, 0.7, 0.6]),
                                   torch.zeros(4, dtype=torch.int64), 2)
    assert b.tolist() == [A, D] and s.tolist() == pytest.approx([1.7 / 3, 1.3 / 3])


def test_wbc_min_score_and_the_batched_default_threshold():
    from retina_unet.inference.wbc import weighted_box_clustering_batched

    one = (torch.tensor([A]), torch.tensor([0.4]), torch.tensor([0]))
    assert weighted_box_clustering(*one, 1)[1].tolist() == pytest.approx([0.4])
    assert weighted_box_clustering(*one, 1, min_score=0.5)[1].tolist() == []  # 0.4 <= 0.5: dropped
    # A and C overlap with IoU 1/3 > 1e-5 (the default): one cluster, weights IoU x area = 100 and 100/3
    b, s, _ = weighted_box_clustering_batched(torch.tensor([A, C]), torch.tensor([0.8, 0.4]), torch.tensor([0, 1]),
                                              torch.zeros(2, dtype=torch.int64), 2)
    assert len(s) == 1 and s.tolist() == pytest.approx([(0.8 * 100 + 0.4 * 100 / 3) / (100 + 100 / 3)])


def test_predict_images_hands_back_float32_from_a_bfloat16_model():
    """A model under bfloat16 autocast may emit bfloat16 scores: the loop returns them as float32
    (NumPy and the evaluation cannot read bfloat16) and leaves float64, integers and non-tensors alone."""
    import numpy as np

    from retina_unet.inference.loop import predict_images

    def predict_fn(batch):
        return [{"boxes": torch.ones(1, 4, dtype=torch.float64), "scores": torch.full((1,), 0.5, dtype=torch.bfloat16),
                 "labels": torch.ones(1, dtype=torch.int64), "seg": torch.zeros(3, 4, 4, dtype=torch.float16),
                 "note": "x"} for _ in range(batch.shape[0])]

    out = predict_images(predict_fn, [np.zeros((1, 4, 4), np.float32)] * 3, 2, "cpu", keep_seg=True)
    assert len(out) == 3
    for p in out:
        assert p["boxes"].dtype == torch.float64 and p["scores"].dtype == torch.float32
        assert p["labels"].dtype == torch.int64 and p["seg"].dtype == torch.float32 and p["note"] == "x"
        assert p["scores"].item() == 0.5
