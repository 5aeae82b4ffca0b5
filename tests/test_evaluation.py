"""Evaluation: hand-computed cases and a cross-check against an independent brute force and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina_unet.evaluation import average_precision, evaluate_detections, match_image_class, patient_level_ap


def _pred(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, len(boxes[0]) if boxes else 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _tgt(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, len(boxes[0]) if boxes else 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


BOX = [10.0, 10.0, 30.0, 30.0]


def test_perfect_detection_gives_ap_one():
    preds = [_pred([BOX], [0.9], [1]), _pred([BOX], [0.8], [2])]
    tgts = [_tgt([BOX], [1]), _tgt([BOX], [2])]
    res = evaluate_detections(preds, tgts, 2)
    assert res["ap"] == {1: 1.0, 2: 1.0} and res["mAP"] == 1.0 and res["patient_mAP"] == 1.0


def test_one_fp_ranked_above_the_tp():
    # class 1: image A has the object; a FP in image B scores higher than the TP in A.
    preds = [_pred([BOX], [0.5], [1]), _pred([[50, 50, 60, 60]], [0.9], [1])]
    tgts = [_tgt([BOX], [1]), _tgt([], [])]
    res = evaluate_detections(preds, tgts, 1)
    # ranking: FP (p=0, r=0), TP (p=1/2, r=1); monotone precision = 0.5 at every recall point
    assert res["ap"][1] == pytest.approx(0.5)
    assert res["n_tp"][1] == 1 and res["n_fp"][1] == 1


def test_duplicates_highest_score_is_tp_others_fp():
    m = match_image_class(
        torch.tensor([BOX, BOX, [11, 11, 31, 31]]), torch.tensor([0.3, 0.9, 0.5]), torch.tensor([BOX])
    )
    assert m.scores.tolist() == pytest.approx([0.9, 0.5, 0.3])
    assert m.is_tp.tolist() == [True, False, False]
    # AP: TP first (p=1, r=1) -> AP 1 even with the duplicates after it
    assert average_precision(m.scores, m.is_tp, 1) == 1.0


def test_missed_gt_halves_recall():
    preds = [_pred([BOX], [0.9], [1]), _pred([], [], [])]
    tgts = [_tgt([BOX], [1]), _tgt([BOX], [1])]
    res = evaluate_detections(preds, tgts, 1)
    # recall reaches 0.5 with precision 1: recall points 0..0.5 (51 of 101) have precision 1
    assert res["ap"][1] == pytest.approx(51 / 101)
    # patient level: the second image has no prediction, so it is a miss too (not a hit scored 0)
    assert res["patient_ap"][1] == pytest.approx(51 / 101)


def test_score_floor_drops_predictions():
    m = match_image_class(torch.tensor([BOX]), torch.tensor([0.1]), torch.tensor([BOX]))
    assert m.scores.size == 0 and m.n_missed == 1
    m = match_image_class(torch.tensor([BOX]), torch.tensor([0.1001]), torch.tensor([BOX]))
    assert m.n_tp == 1
    m = match_image_class(torch.tensor([BOX]), torch.tensor([0.05]), torch.tensor([BOX]), score_threshold=0.0)
    assert m.n_tp == 1


def test_iou_exactly_threshold_is_not_a_match():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    exact = torch.tensor([[0.0, 0.0, 10.0, 1.0]])  # IoU = 10 / 100 = 0.1 exactly
    above = torch.tensor([[0.0, 0.0, 10.0, 1.5]])  # 0.15
    assert match_image_class(exact, torch.tensor([0.9]), gt).n_tp == 0
    assert match_image_class(above, torch.tensor([0.9]), gt).n_tp == 1
    assert match_image_class(exact, torch.tensor([0.9]), gt, iou_threshold=0.09).n_tp == 1


def test_class_mismatch_is_fp_and_miss():
    res = evaluate_detections([_pred([BOX], [0.9], [2])], [_tgt([BOX], [1])], 2)
    assert res["ap"][1] == 0.0 and res["ap"][2] is None and res["mAP"] == 0.0


def test_3d_volumetric_iou():
    gt = torch.tensor([[0.0, 0, 0, 10, 10, 10]])
    # overlaps 10x10x2 = 200 of union 1000 + 200 - 200 = 1000 -> IoU 0.2 (matches); 2D IoU of the
    # first two axes would be 1.
    pred = torch.tensor([[0.0, 0, 8, 10, 10, 10]])
    assert match_image_class(pred, torch.tensor([0.9]), gt).n_tp == 1
    thin = torch.tensor([[0.0, 0, 9.5, 10, 10, 10]])  # IoU 0.05
    assert match_image_class(thin, torch.tensor([0.9]), gt).n_tp == 0
    res = evaluate_detections([_pred(pred.tolist(), [0.9], [1])], [_tgt(gt.tolist(), [1])], 1)
    assert res["mAP"] == 1.0


def test_patient_level_ap_hand_case():
    # scores: pos 0.9, neg 0.8, pos 0.3 -> ranking TP FP TP: P=[1, .5, .67] monotone [1, .67, .67]
    ap = patient_level_ap(np.array([0.9, 0.8, 0.3]), np.array([True, False, True]))
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert ap == pytest.approx(expected)


def test_no_predictions_and_no_gt():
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert np.isnan(average_precision(np.zeros(0), np.zeros(0, bool), 0))


# --- cross-checks -------------------------------------------------------------------------------
def _random_case(rng, n_images, dim, num_classes):
    preds, tgts = [], []
    for _ in range(n_images):
        k = rng.integers(0, 3)
        lo = rng.uniform(0, 40, (k, dim))
        gt = np.concatenate([lo, lo + rng.uniform(5, 15, (k, dim))], 1)
        gl = rng.integers(1, num_classes + 1, k)
        p = rng.integers(0, 5)
        src = gt[rng.integers(0, max(k, 1), p)] if k else rng.uniform(0, 40, (p, 2 * dim))
        pb = src + rng.normal(0, 3, src.shape)
        pb[:, dim:] = np.maximum(pb[:, dim:], pb[:, :dim] + 1)
        pl = gl[rng.integers(0, k, p)] if k else rng.integers(1, num_classes + 1, p)
        pl = np.where(rng.uniform(size=p) < 0.2, rng.integers(1, num_classes + 1, p), pl)
        ps = rng.uniform(0, 1, p)
        preds.append({"boxes": pb, "scores": ps, "labels": pl})
        tgts.append({"boxes": gt, "labels": gl})
    return preds, tgts


def _iou_brute(a, b):
    d = len(a) // 2
    inter = np.prod([max(0.0, min(a[d + i], b[d + i]) - max(a[i], b[i])) for i in range(d)])
    va, vb = np.prod(a[d:] - a[:d]), np.prod(b[d:] - b[:d])
    return inter / (va + vb - inter)


def _brute_ap(preds, tgts, cls, iou_thr=0.1, score_thr=0.1):
    """Independent: explicit loops, precision envelope by definition, recall points by linear scan."""
    records, n_gt = [], 0
    for p, t in zip(preds, tgts, strict=False):
        gts = [g for g, lab in zip(t["boxes"], t["labels"], strict=False) if lab == cls]
        n_gt += len(gts)
        dets = sorted(
            [
                (s, b)
                for b, s, lab in zip(p["boxes"], p["scores"], p["labels"], strict=False)
                if lab == cls and s > score_thr
            ],
            key=lambda x: -x[0],
        )
        used = [False] * len(gts)
        for s, b in dets:
            best, best_iou = None, iou_thr
            for j, g in enumerate(gts):
                iou = _iou_brute(np.asarray(b), np.asarray(g))
                if not used[j] and iou > best_iou:
                    best, best_iou = j, iou
            if best is not None:
                used[best] = True
            records.append((s, best is not None))
    if n_gt == 0:
        return None
    records.sort(key=lambda r: -r[0])
    tp = fp = 0
    prec, rec = [], []
    for _, ok in records:
        tp, fp = tp + ok, fp + (not ok)
        prec.append(tp / (tp + fp))
        rec.append(tp / n_gt)
    total = 0.0
    for r in np.linspace(0, 1, 101):
        cands = [max(prec[i:]) for i in range(len(rec)) if rec[i] >= r]
        total += cands[0] if cands else 0.0
    return total / 101


@pytest.mark.parametrize("dim", [2, 3])
def test_cross_check_against_brute_force(dim):
    rng = np.random.default_rng(dim)
    for _ in range(15):
        preds, tgts = _random_case(rng, 6, dim, 2)
        res = evaluate_detections(preds, tgts, 2)
        for cls in (1, 2):
            ref = _brute_ap(preds, tgts, cls)
            assert (res["ap"][cls] is None) == (ref is None)
            if ref is not None:
                assert res["ap"][cls] == pytest.approx(ref, abs=1e-12)


def test_cross_check_against_monai_coco_metric():
    import monai.apps.detection.metrics.coco as coco
    import monai.apps.detection.metrics.matching as matching
    from monai.data.box_utils import box_iou as monai_box_iou

    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(6):
        dim = 2 if trial % 2 == 0 else 3
        preds, tgts = _random_case(rng, 8, dim, 2)
        # MONAI keeps every prediction; apply our score floor first. MONAI matches at IoU >= t,
        # ours at > t: identical except at exact ties, which random floats do not hit.
        kept = [{k: v[p["scores"] > 0.1] for k, v in p.items()} for p in preds]
        metric = coco.COCOMetric(
            classes=["c1", "c2"], iou_list=[0.1], iou_range=(0.1, 0.1, 1), max_detection=[100]
        )
        results = matching.matching_batch(
            iou_fn=lambda a, b: monai_box_iou(a, b),
            iou_thresholds=metric.iou_thresholds,
            pred_boxes=[p["boxes"] for p in kept],
            pred_classes=[p["labels"] - 1 for p in kept],
            pred_scores=[p["scores"] for p in kept],
            gt_boxes=[t["boxes"] for t in tgts],
            gt_classes=[t["labels"] - 1 for t in tgts],
            max_detections=100,
        )
        monai_res = metric(results)[0]
        ours = evaluate_detections(preds, tgts, 2)
        for cls in (1, 2):
            key = f"c{cls}_AP_IoU_0.10_MaxDet_100"
            if ours["ap"][cls] is None or key not in monai_res or monai_res[key] < 0:
                continue
            assert ours["ap"][cls] == pytest.approx(monai_res[key], abs=1e-6), (trial, cls)
            checked += 1
    assert checked >= 6


# --- sharper hand cases: input types and shapes, empty inputs, every field, error messages ----------


def test_scores_and_flags_of_any_dtype_or_shape_rank_by_value():
    # unsigned scores rank by value (negating a uint8 0 / 3 would wrap): the TP (3) comes first -> AP 1
    assert average_precision(np.array([0, 3], np.uint8), np.array([False, True]), 1) == 1.0
    # 0/1 integer flags: FP then TP -> precision 1/2 at recall 1 -> AP 0.5
    assert average_precision([0.9, 0.8], [0, 1], 1) == pytest.approx(0.5)
    # TP FP TP with 2 objects (the patient hand case): columns and rows give the flat answer
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert average_precision(np.array([[0.9], [0.8], [0.3]]), np.array([[True, False, True]]), 2) == pytest.approx(
        expected)


def test_interpolated_precision_without_ground_truth_is_nan_everywhere():
    from retina_unet.evaluation import interpolated_precision

    for scores, is_tp in (([], []), ([0.9], [False])):
        p = interpolated_precision(np.asarray(scores, np.float64), np.asarray(is_tp, bool), 0)
        assert p.shape == (101,) and np.isnan(p).all()
    assert interpolated_precision(np.zeros(0), np.zeros(0, bool), 2).tolist() == [0.0] * 101


def test_patient_level_ap_takes_any_truthy_flag():
    # image_has_class as object counts (2, 0, 1): 2 positive images, not 3 objects -> the hand case's AP
    ap = patient_level_ap(np.array([0.9, 0.8, 0.3]), np.array([2, 0, 1]))
    assert ap == pytest.approx((51 * 1.0 + 50 * (2 / 3)) / 101)


def test_evaluate_detections_every_field():
    # the one-FP-above-the-TP case at non-default thresholds (IoU 1 > 0.2, scores > 0.05): class 1 AP 0.5;
    # patient level: image B (0.9, no object) above image A (0.5, object) -> 0.5; class 2: nothing
    preds = [_pred([BOX], [0.5], [1]), _pred([[50, 50, 60, 60]], [0.9], [1])]
    tgts = [_tgt([BOX], [1]), _tgt([], [])]
    res = evaluate_detections(preds, tgts, 2, iou_threshold=0.2, score_threshold=0.05)
    assert res == {"ap": {1: 0.5, 2: None}, "patient_ap": {1: 0.5, 2: None}, "n_gt": {1: 1, 2: 0},
                   "n_tp": {1: 1, 2: 0}, "n_fp": {1: 1, 2: 0}, "mAP": 0.5, "patient_mAP": 0.5, "n_images": 2,
                   "iou_threshold": 0.2, "score_threshold": 0.05}
    # no class with ground truth: no AP is defined, the means are None (not NaN)
    res = evaluate_detections([_pred([BOX], [0.9], [1])], [_tgt([], [])], 2)
    assert res["mAP"] is None and res["patient_mAP"] is None and res["patient_ap"] == {1: None, 2: None}
    # no images at all: nothing defined, nothing counted
    assert evaluate_detections([], [], 2) == {
        "ap": {1: None, 2: None}, "patient_ap": {1: None, 2: None}, "n_gt": {1: 0, 2: 0}, "n_tp": {1: 0, 2: 0},
        "n_fp": {1: 0, 2: 0}, "mAP": None, "patient_mAP": None, "n_images": 0, "iou_threshold": 0.1,
        "score_threshold": 0.1}
    with pytest.raises(ValueError, match=r"^2 predictions but 1 targets$"):
        evaluate_detections(preds, tgts[:1], 2)


def test_match_image_class_every_field():
    # objects A = BOX and B = [50, 50, 60, 60]; predictions (input order): 0.3 at BOX (duplicate, FP),
    # 0.9 at [10, 10, 30, 20] (IoU 200 / 400 = 0.5 with A: TP of A), 0.6 at [50, 50, 60, 52.5]
    # (IoU 25 / 100 = 0.25 with B: TP of B), 0.2 far away (FP)
    m = match_image_class([BOX, [10.0, 10, 30, 20], [50.0, 50, 60, 52.5], [80.0, 80, 90, 90]],
                          [0.3, 0.9, 0.6, 0.2], [BOX, [50.0, 50, 60, 60]])
    assert m.scores.tolist() == [0.9, 0.6, 0.3, 0.2] and m.index.tolist() == [1, 2, 0, 3]
    assert m.is_tp.tolist() == [True, True, False, False] and m.matched_gt.tolist() == [0, 1, -1, -1]
    assert m.pred_best_iou.tolist() == [0.5, 0.25, 1.0, 0.0] and m.gt_best_iou.tolist() == [1.0, 0.25]
    assert (m.n_gt, m.n_tp, m.n_fp, m.n_missed) == (2, 2, 2, 0)
    # no prediction: the objects are missed, their best IoU is 0
    m = match_image_class(np.zeros((0, 4)), np.zeros(0), [BOX, [50.0, 50, 60, 60]])
    assert m.gt_best_iou.tolist() == [0.0, 0.0] and m.n_missed == 2 and m.matched_gt.tolist() == []
    # no box at all, in any empty shape
    m = match_image_class(np.zeros(0), np.zeros(0), [])
    assert (m.n_gt, m.scores.tolist(), m.gt_best_iou.tolist()) == (0, [], [])


def test_match_image_class_input_types():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # tensors straight from a model (requiring grad) are read without complaint
    m = match_image_class(torch.tensor([BOX], requires_grad=True), torch.tensor([0.9], requires_grad=True),
                          torch.tensor([BOX]))
    assert m.n_tp == 1
    # boxes as Python lists are read in float64: IoU 0.100000005 matches, a float32 reading (1.0) would not
    assert match_image_class([[0.0, 0.0, 10.0, 1.00000005]], [0.9], [[0.0, 0.0, 10.0, 10.0]]).n_tp == 1
    # float32 boxes: IoUs reported in float64
    m = match_image_class(torch.tensor([[0.0, 0.0, 10.0, 5.0]]), torch.tensor([0.9]), gt.numpy().astype(np.float64))
    assert m.pred_best_iou.dtype == np.float64 and m.gt_best_iou.dtype == np.float64
    assert m.pred_best_iou.tolist() == [0.5]
    # integer scores compare as numbers: 0 is dropped at the default threshold, kept below -0.5
    assert match_image_class([BOX, BOX], np.array([0, 2]), [BOX]).scores.tolist() == [2.0]
    m = match_image_class([BOX, BOX], np.array([0, 2]), [BOX], score_threshold=-0.5)
    assert m.scores.tolist() == [2.0, 0.0] and m.is_tp.tolist() == [True, False]
    # scores as a column: flattened
    m = match_image_class([[80.0, 80, 90, 90], BOX], torch.tensor([[0.3], [0.9]]), [BOX])
    assert m.index.tolist() == [1, 0] and m.is_tp.tolist() == [True, False]


def test_match_image_class_ties_keep_the_input_order():
    # 20 duplicates of the object, scores in 4 tied groups: ranked by score, ties by input position
    # (a stable sort); the first of the highest group is the TP
    scores = [(i * 7 % 4 + 1) / 4 for i in range(20)]
    m = match_image_class([BOX] * 20, scores, [BOX])
    expected = sorted(range(20), key=lambda i: -scores[i])
    assert m.index.tolist() == expected and m.index[0] == 1 and m.is_tp.tolist() == [True] + [False] * 19


def test_match_image_class_error_messages():
    with pytest.raises(ValueError, match=r"^boxes must have shape \(N, 4\) or \(N, 6\), got \(1, 5\)$"):
        match_image_class([[0.0, 0, 1, 1, 1]], [0.9], [BOX])
    with pytest.raises(ValueError, match=r"^predicted boxes are 2D but ground truth is 3D$"):
        match_image_class([BOX], [0.9], [[0.0, 0, 0, 10, 10, 10]])
    with pytest.raises(ValueError, match=r"^2 predicted boxes but 3 scores$"):
        match_image_class([BOX, BOX], [0.9, 0.8, 0.7], [BOX])


def test_match_dataset_defaults_shapes_and_errors():
    from retina_unet.evaluation.matching import match_dataset

    # default thresholds 0.1: IoU 0.15 and score 0.15 are a TP
    pred = {"boxes": np.array([[0.0, 0, 10, 1.5]]), "scores": np.array([0.15]), "labels": np.array([1])}
    tgt = {"boxes": np.array([[0.0, 0, 10, 10]]), "labels": np.array([1])}
    assert match_dataset([pred], [tgt], 1)[0].is_tp.tolist() == [True]
    # labels as columns, scores as a row, tensors that require grad: read as flat lists
    pred = {"boxes": torch.tensor([[80.0, 80, 90, 90], BOX, BOX], requires_grad=True),
            "scores": torch.tensor([[0.8, 0.9, 0.7]], requires_grad=True), "labels": torch.tensor([[1], [1], [2]])}
    tgt = {"boxes": torch.tensor([BOX, BOX]), "labels": torch.tensor([[2], [1]])}
    m1, m2 = match_dataset([pred], [tgt], 1)[0], match_dataset([pred], [tgt], 2)[0]
    assert m1.index.tolist() == [1, 0] and m1.is_tp.tolist() == [True, False] and m1.matched_gt.tolist() == [0, -1]
    assert m2.index.tolist() == [2] and m2.is_tp.tolist() == [True] and m2.n_gt == 1
    with pytest.raises(ValueError, match=r"^2 predictions but 1 targets$"):
        match_dataset([pred, pred], [tgt], 1)
    # a prediction with a label and a score but no box, and a target whose box is malformed: told so
    with pytest.raises(ValueError, match=r"^0 predicted boxes but 1 scores$"):
        match_dataset([{"boxes": np.zeros((0, 4)), "scores": np.array([0.9]), "labels": np.array([1])}], [tgt], 1)
    with pytest.raises(ValueError, match=r"^boxes must have shape \(N, 4\) or \(N, 6\), got \(1, 1\)$"):
        match_dataset([pred], [{"boxes": np.zeros((1, 1)), "labels": np.array([1])}], 1)
