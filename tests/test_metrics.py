"""Richer metrics: AP over an IoU grid, COCO-style average, FROC / CPM, per-case rows, figures.

Hand-computed cases (each expected number worked out in the comments), then properties checked with
hypothesis: monotone in the IoU threshold (one object per image, the toy setting), invariant under
a strictly increasing score transform, FROC equal to a brute force over thresholds, and agreement
with the paper's AP at IoU > 0.1.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retina_unet.evaluation import (
    COCO_IOU_GRID,
    FROC_FP_RATES,
    average_precision,
    detection_metrics,
    froc,
    froc_curve,
    per_case_rows,
    sensitivity_at,
)
from retina_unet.evaluation.export import write_metrics


def _img(boxes, scores, labels):
    d = len(boxes[0]) if boxes else 4
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, d), "scores": np.asarray(scores, np.float64),
            "labels": np.asarray(labels, np.int64)}


def _gt(boxes, labels):
    d = len(boxes[0]) if boxes else 4
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, d), "labels": np.asarray(labels, np.int64)}


GT = [0.0, 0.0, 10.0, 10.0]
FAR = [50.0, 50.0, 60.0, 60.0]


# --- FROC by hand ------------------------------------------------------------------------------


def _froc_case():
    """4 images, 3 objects of class 1 (images 0-2), image 3 empty. Ranked predictions:
    0.9 TP (img 0), 0.8 FP (img 0), 0.7 FP (img 1), 0.6 FP (img 3), 0.4 TP (img 1), 0.3 FP (img 3);
    the object of image 2 is never found."""
    preds = [_img([GT, FAR], [0.9, 0.8], [1, 1]), _img([FAR, GT], [0.7, 0.4], [1, 1]), _img([], [], []),
             _img([FAR, FAR], [0.6, 0.3], [1, 1])]
    tgts = [_gt([GT], [1]), _gt([GT], [1]), _gt([GT], [1]), _gt([], [])]
    return preds, tgts


def test_froc_hand_case():
    # operating points (FPs/image, sensitivity): (0,0) start; >=0.9 (0, 1/3); >=0.8 (1/4, 1/3);
    # >=0.7 (2/4, 1/3); >=0.6 (3/4, 1/3); >=0.4 (3/4, 2/3); >=0.3 (4/4, 2/3).
    fpi, sens, thr = froc_curve([0.9, 0.8, 0.7, 0.6, 0.4, 0.3], [1, 0, 0, 0, 1, 0], n_gt=3, n_images=4)
    assert fpi.tolist() == [0, 0, 0.25, 0.5, 0.75, 0.75, 1.0]
    assert sens.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.8, 0.7, 0.6, 0.4, 0.3]
    # at f = 1/8, 1/4, 1/2: the best point with fpi <= f has sensitivity 1/3; at 1: 2/3 (>=0.3);
    # beyond the curve's end (2, 4, 8) the last point: 2/3. CPM = (3 * 1/3 + 4 * 2/3) / 7 = 11/21.
    expected = [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    f = froc([0.9, 0.8, 0.7, 0.6, 0.4, 0.3], [1, 0, 0, 0, 1, 0], 3, 4)
    assert f["sensitivity"] == pytest.approx(expected) and f["cpm"] == pytest.approx(11 / 21)
    # the same numbers end to end from boxes (class 2 has no objects: NaN -> None; "all" = class 1)
    m = detection_metrics(*_froc_case(), num_classes=2)
    assert m["froc"]["1"]["sensitivity"] == pytest.approx(expected)
    assert m["froc"]["1"]["cpm"] == pytest.approx(11 / 21) and m["froc"]["all"]["cpm"] == pytest.approx(11 / 21)
    assert m["froc"]["2"]["cpm"] is None
    assert m["operating_point"]["1"] == {"sensitivity": pytest.approx(2 / 3), "fp_per_image": 1.0,
                                         "n_detections": 6, "n_gt": 3}


def test_froc_ties_enter_together_and_rates_below_first_fp():
    # a TP and a FP with equal scores (2 images): no threshold keeps one without the other, so the
    # sensitivity at 1/4 FP per image is 0 (a stable order putting the TP first would claim 1).
    fpi, sens, _ = froc_curve([0.5, 0.5], [True, False], n_gt=1, n_images=2)
    assert fpi.tolist() == [0.0, 0.5] and sens.tolist() == [0.0, 1.0]
    assert sensitivity_at(fpi, sens, [0.25, 0.5, 0.0]).tolist() == [0.0, 1.0, 0.0]
    # with no FP at all, every rate gets the full sensitivity; with no GT, NaN
    assert froc([0.9], [True], 2, 1)["sensitivity"] == [0.5] * len(FROC_FP_RATES)
    assert np.isnan(froc([0.9], [False], 0, 1)["cpm"])


def test_froc_overall_pools_classes_per_image():
    # 2 images. class 1: TP 0.9 (img 0); class 2: FP 0.8 (img 0, wrong class at the class-1 object)
    # and TP 0.7 (img 1). Overall ranking: TP, FP, TP; n_gt 2, n_images 2:
    # points (0, 1/2), (1/2, 1/2), (1/2, 1) -> at 1/4: 1/2; at 1/2 and above: 1.
    preds = [_img([GT, GT], [0.9, 0.8], [1, 2]), _img([GT], [0.7], [2])]
    tgts = [_gt([GT], [1]), _gt([GT], [2])]
    m = detection_metrics(preds, tgts, 2, fp_rates=(0.25, 0.5, 1.0))
    assert m["froc"]["all"]["sensitivity"] == pytest.approx([0.5, 1.0, 1.0])
    assert m["froc"]["1"]["sensitivity"] == [1.0, 1.0, 1.0]
    # class 2 alone: FP (img 0) before TP (img 1): (1/2, 0) then (1/2, 1) -> 0 at 1/4, 1 from 1/2
    assert m["froc"]["2"]["sensitivity"] == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="rates must be >= 0"):
        sensitivity_at(np.zeros(1), np.zeros(1), [-1.0])
    with pytest.raises(ValueError, match="n_images must be >= 1"):
        froc_curve([0.5], [True], 1, 0)


# --- AP over IoU thresholds by hand -----------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_ap_by_iou_threshold_and_coco_average(dim):
    # one object, one prediction with IoU 0.45 (a 10 x 4.5 part of a 10 x 10 box; x 10 deep in 3D):
    # a TP at IoU > 0.1 .. 0.4, a miss + FP at > 0.5 -> AP 1, 1, 1, 1, 0; COCO-style mean 0.8.
    gt = [0.0] * dim + [10.0] * dim
    pred = [0.0] * dim + [10.0] * (dim - 1) + [4.5]
    m = detection_metrics([_img([pred], [0.9], [1])], [_gt([gt], [1])], 1)
    assert [m["ap_by_iou"][k]["1"] for k in ("0.1", "0.2", "0.3", "0.4", "0.5")] == [1, 1, 1, 1, 0]
    assert m["coco_style"]["ap"]["1"] == pytest.approx(0.8) and m["coco_style"]["mAP"] == pytest.approx(0.8)
    assert m["coco_style"]["grid"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    # the standard COCO grid 0.5:0.95: IoU 0.72 is a TP at 0.5, 0.55, 0.6, 0.65, 0.7 only -> 0.5
    pred = [0.0] * dim + [10.0] * (dim - 1) + [7.2]
    m = detection_metrics([_img([pred], [0.9], [1])], [_gt([gt], [1])], 1, grid="coco")
    assert m["coco_style"]["grid"] == list(COCO_IOU_GRID) and m["coco_style"]["mAP"] == pytest.approx(0.5)
    assert "0.1" in m["ap_by_iou"]  # the primary threshold is always reported


def test_ap_hand_case_and_paper_block():
    # the FROC case ranked TP, FP, FP, FP, TP, FP with 3 objects: monotone precision 1 up to recall
    # 1/3 (34 recall points 0..0.33), 0.4 up to 2/3 (33 points 0.34..0.66), 0 above: AP = 47.2/101.
    preds, tgts = _froc_case()
    m = detection_metrics(preds, tgts, 1)
    assert m["ap_by_iou"]["0.1"]["1"] == pytest.approx(47.2 / 101)
    assert m["paper"]["ap"]["1"] == pytest.approx(47.2 / 101) and m["paper"]["n_fp"]["1"] == 4
    prec = m["curves"]["pr"]["precision"]["0.1"]["1"]
    assert prec[:34] == [1.0] * 34 and prec[34:67] == pytest.approx([0.4] * 33) and prec[67:] == [0.0] * 34
    assert json.loads(json.dumps(m)) == m  # JSON-ready
    with pytest.raises(ValueError, match="iou grid"):
        detection_metrics(preds, tgts, 1, grid="voc")
    with pytest.raises(ValueError, match="score_threshold"):
        detection_metrics(preds, tgts, 1, score_threshold=1.0)


# --- per case by hand -------------------------------------------------------------------------


def test_per_case_rows_hand_case():
    # image 0: objects class 1 at GT and class 2 at FAR. Predictions: class 1 at GT (0.9, TP),
    # class 1 at GT again (0.6, duplicate -> FP), class 2 half-overlapping nothing (0.7 at [52,52,62,62]:
    # IoU with FAR = 64 / 136 = 0.4706 -> TP), class 2 at 0.05 (dropped by the score threshold).
    # image 1: no object; one class-1 FP at 0.3.
    near = [52.0, 52.0, 62.0, 62.0]
    preds = [_img([GT, GT, near, FAR], [0.9, 0.6, 0.7, 0.05], [1, 1, 2, 2]), _img([FAR], [0.3], [1])]
    tgts = [_gt([GT, FAR], [1, 2]), _gt([], [])]
    cases, dets = per_case_rows(preds, tgts, 2)
    c0, c1 = cases
    assert (c0["n_gt"], c0["gt_classes"], c0["gt_found"], c0["gt_best_iou"]) == (2, "1;2", "1;1", "1.0000;0.4706")
    assert (c0["n_det"], c0["n_tp"], c0["n_fp"], c0["n_missed"], c0["all_found"]) == (3, 2, 1, 0, 1)
    assert (c0["top_class"], c0["top_score"], c0["score_c1"], c0["score_c2"]) == (1, 0.9, 0.9, 0.7)
    assert (c1["n_gt"], c1["n_fp"], c1["best_iou"], c1["all_found"], c1["score_c2"]) == (0, 1, "", 1, 0.0)
    assert [(d["case"], d["rank"], d["class"], d["tp"], d["matched_gt"]) for d in dets] == [
        (0, 0, 1, 1, 0), (0, 1, 2, 1, 1), (0, 2, 1, 0, -1), (1, 0, 1, 0, -1)]
    assert dets[1]["box"] == "52 52 62 62" and dets[2]["iou"] == 1.0
    # a stricter IoU threshold: the class-2 object becomes a miss, its prediction a FP
    c0 = per_case_rows(preds, tgts, 2, iou_threshold=0.5)[0][0]
    assert (c0["gt_found"], c0["n_missed"], c0["all_found"], c0["n_fp"]) == ("1;0", 1, 0, 2)
    with pytest.raises(ValueError, match="case_ids"):
        per_case_rows(preds, tgts, 2, case_ids=["a"])


def test_write_metrics_folder(tmp_path):
    preds, tgts = _froc_case()
    m = write_metrics(tmp_path / "m", preds, tgts, 2, label="hand", meta={"split": "test"})
    for name in m["files"]:
        assert (tmp_path / "m" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == m and m["meta"]["split"] == "test"
    with open(tmp_path / "m" / "per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and [r["gt_found"] for r in rows] == ["1", "1", "0", ""]
    assert not list((tmp_path / "m").glob(".*.tmp"))  # no temp files left behind


# --- properties -------------------------------------------------------------------------------


@st.composite
def one_object_images(draw, dim=2):
    """1-6 images with exactly one object each (the toy protocol) and 0-4 predictions per image:
    shifted copies of the object or random boxes, scores k/16, classes 1-2."""
    n = draw(st.integers(1, 6))
    preds, tgts = [], []
    for _ in range(n):
        lo = np.array(draw(st.lists(st.integers(0, 20), min_size=dim, max_size=dim)), float)
        size = draw(st.integers(4, 12))
        gt = np.r_[lo, lo + size]
        boxes, scores, labels = [], [], []
        for _ in range(draw(st.integers(0, 4))):
            if draw(st.booleans()):
                shift = np.array(draw(st.lists(st.integers(-6, 6), min_size=dim, max_size=dim)), float)
                boxes.append(np.r_[lo + shift, lo + shift + size])
            else:
                a = np.array(draw(st.lists(st.integers(0, 30), min_size=dim, max_size=dim)), float)
                boxes.append(np.r_[a, a + draw(st.integers(2, 12))])
            scores.append(draw(st.integers(1, 16)) / 16)
            labels.append(draw(st.integers(1, 2)))
        preds.append(_img([b.tolist() for b in boxes], scores, labels))
        tgts.append(_gt([gt.tolist()], [draw(st.integers(1, 2))]))
    return preds, tgts


@given(one_object_images())
def test_ap_and_sensitivity_monotone_in_iou_threshold(data):
    # With one object per image, a higher threshold can only move each image's TP to a later rank or
    # drop it, so AP and every FROC sensitivity are non-increasing. (With several objects per image
    # greedy matching gives no such guarantee, so the property is checked in the toy setting.)
    preds, tgts = data
    prev = None
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
        m = detection_metrics(preds, tgts, 2, iou_threshold=t, grid=[t])
        now = [m["ap_by_iou"][f"{t:g}"][c] for c in ("1", "2")] + m["froc"]["all"]["sensitivity"]
        if prev is not None:
            assert all(b is None or b <= a + 1e-12 for a, b in zip(prev, now, strict=True)), (t, prev, now)
        prev = now


@given(one_object_images(dim=3))
def test_invariant_under_strictly_increasing_score_transform(data):
    # s -> s^3 keeps the order and the ties (k/16 cubes are exact); the threshold maps with it.
    preds, tgts = data
    cubed = [{**p, "scores": p["scores"] ** 3} for p in preds]
    a = detection_metrics(preds, tgts, 2, score_threshold=0.1)
    b = detection_metrics(cubed, tgts, 2, score_threshold=0.1**3)
    for key in ("ap_by_iou", "coco_style", "froc", "operating_point", "curves"):
        assert a[key] == b[key], key
    assert a["paper"]["ap"] == b["paper"]["ap"] and a["paper"]["patient_ap"] == b["paper"]["patient_ap"]


def _iou(a, b) -> float:
    """IoU of two boxes (lo..., hi...) in any dimension, written out independently of the package."""
    d = len(a) // 2
    inter = np.prod(np.clip(np.minimum(a[d:], b[d:]) - np.maximum(a[:d], b[:d]), 0, None))
    return float(inter / (np.prod(a[d:] - a[:d]) + np.prod(b[d:] - b[:d]) - inter))


def _brute_force_ap(scores, is_tp, n_gt) -> float:
    """101-point AP from the definition: rank by score (Python's stable sort), and at each recall
    point r take the best precision among the ranks whose recall reaches r (0 if none does)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    points, tp = [], 0
    for k, i in enumerate(order, start=1):
        tp += bool(is_tp[i])
        points.append((tp / n_gt, tp / k))
    return sum(max([p for r_k, p in points if r_k >= r - 1e-12], default=0.0) for r in np.linspace(0, 1, 101)) / 101


def _distinct_scores(preds):
    """Break score ties by a tiny per-prediction offset (1e-4 x running index, far below the 1/16
    steps), so the ranking does not depend on how ties are ordered."""
    out, i = [], 0
    for p in preds:
        n = len(p["scores"])
        out.append({**p, "scores": p["scores"] + 1e-4 * np.arange(i, i + n)})
        i += n
    return out


@given(one_object_images())
def test_ap_equals_an_independent_brute_force(data):
    """AP at IoU > 0.1 from first principles (one object per image, distinct scores): per image and
    class, predictions scoring <= 0.1 are dropped, the highest-scoring one with IoU > 0.1 with an
    object of its class is the TP, every other one an FP; then the 101-point AP by brute force."""
    preds, tgts = data
    preds = _distinct_scores(preds)
    m = detection_metrics(preds, tgts, 2)
    for c in (1, 2):
        scores, is_tp, n_gt = [], [], 0
        for p, g in zip(preds, tgts, strict=True):
            gt = [b for b, lab in zip(g["boxes"], g["labels"], strict=True) if lab == c]
            n_gt += len(gt)
            mine = sorted((s, b) for s, b, lab in zip(p["scores"], p["boxes"], p["labels"], strict=True)
                          if lab == c and s > 0.1)[::-1]
            found = False
            for s, b in mine:
                hit = not found and bool(gt) and _iou(b, gt[0]) > 0.1
                found |= hit
                scores.append(s)
                is_tp.append(hit)
        expected = None if n_gt == 0 else _brute_force_ap(scores, is_tp, n_gt)
        got = m["ap_by_iou"]["0.1"][str(c)]
        assert got == (None if expected is None else pytest.approx(expected, abs=1e-12)), (c, got, expected)
        assert m["paper"]["ap"][str(c)] == got


@given(one_object_images())
def test_agrees_with_brute_force_froc_and_ap(data):
    preds, tgts = data
    m = detection_metrics(preds, tgts, 2)
    # FROC "all" against a brute force over every threshold, from the per-case detection list
    _, dets = per_case_rows(preds, tgts, 2)
    scores = np.array([d["score"] for d in dets])
    tp = np.array([d["tp"] for d in dets], bool)
    n_gt, n = len(tgts), len(tgts)
    for f, got in zip(FROC_FP_RATES, m["froc"]["all"]["sensitivity"], strict=True):
        best = 0.0
        for s in [np.inf, *scores]:
            keep = scores >= s
            if (keep & ~tp).sum() / n <= f:
                best = max(best, (keep & tp).sum() / n_gt)
        assert got == pytest.approx(best)
    # and the AP of the pooled ranking (ties in input order) against the brute force
    assert average_precision(scores, tp, n_gt) == pytest.approx(_brute_force_ap(scores, tp, n_gt), abs=1e-12)


def test_per_case_rows_every_column_by_hand():
    """Case "a": a padding target (label 0) then the object (class 1) at target position 1; class-1
    predictions [0, 0, 10, 7.77777] (score 0.923456789, IoU 0.777777 -> TP) and one scoring 0.15
    (dropped at score_threshold 0.2); a label-0 prediction (ignored). Case "b": no object; its only
    predictions have labels 0 and 3 (outside 1..num_classes: ignored)."""
    preds = [_img([[0.0, 0, 10, 7.77777], GT, GT], [0.923456789, 0.15, 0.9], [1, 1, 0]),
             _img([GT, GT], [0.9, 0.9], [3, 0])]
    tgts = [_gt([[0.0, 0, 1, 1], GT], [0, 1]), _gt([], [])]
    cases, dets = per_case_rows(preds, tgts, 2, score_threshold=0.2, case_ids=["a", "b"])
    assert cases == [
        {"case": "a", "n_gt": 1, "gt_classes": "1", "gt_found": "1", "gt_best_iou": "0.7778", "n_found": 1,
         "n_missed": 0, "all_found": 1, "n_det": 1, "n_tp": 1, "n_fp": 0, "best_iou": "0.7778", "top_class": 1,
         "top_score": 0.923457, "score_c1": 0.923457, "score_c2": 0.0},
        {"case": "b", "n_gt": 0, "gt_classes": "", "gt_found": "", "gt_best_iou": "", "n_found": 0,
         "n_missed": 0, "all_found": 1, "n_det": 0, "n_tp": 0, "n_fp": 0, "best_iou": "", "top_class": "",
         "top_score": "", "score_c1": 0.0, "score_c2": 0.0},
    ]
    assert dets == [{"case": "a", "rank": 0, "class": 1, "score": 0.923457, "tp": 1, "iou": 0.7778,
                     "matched_gt": 1, "box": "0 0 10 7.77777"}]
    assert [c["case"] for c in per_case_rows(preds, tgts, 2)[0]] == [0, 1]  # default case ids


def test_iou_grid_accepts_only_thresholds_in_zero_one():
    assert detection_metrics([_img([GT], [0.9], [1])], [_gt([GT], [1])], 1, grid=[0.0])["coco_style"]["grid"] == [0.0]
    for bad in ([], [1.0], [0.5, 1.0], [-0.1]):
        with pytest.raises(ValueError, match=r"^iou grid must be a non-empty list of thresholds in \[0, 1\), got "
                           + re.escape(str(bad)) + "$"):
            detection_metrics([_img([GT], [0.9], [1])], [_gt([GT], [1])], 1, grid=bad)


# --- sharper hand cases: every key, empty classes, inputs of other dtypes and shapes, messages ---------


def test_every_class_key_and_the_classes_without_objects():
    # the FROC case with 2 classes: class 2 has neither objects nor predictions -> None everywhere
    m = detection_metrics(*_froc_case(), num_classes=2)
    assert m["ap_by_iou"]["0.1"] == {"1": pytest.approx(47.2 / 101), "2": None, "mAP": pytest.approx(47.2 / 101)}
    assert set(m["froc"]) == set(m["operating_point"]) == set(m["curves"]["froc"]["sensitivity"]) == {"1", "2", "all"}
    assert set(m["curves"]["pr"]["precision"]["0.1"]) == {"1", "2"}
    assert m["curves"]["pr"]["precision"]["0.1"]["2"] == [None] * 101
    assert m["coco_style"]["ap"] == {"1": pytest.approx(m["coco_style"]["mAP"]), "2": None}
    # no objects at all: every AP and every mean is None (not NaN)
    m = detection_metrics([_img([FAR], [0.9], [1])], [_gt([], [])], 2)
    assert m["ap_by_iou"]["0.1"] == {"1": None, "2": None, "mAP": None}
    assert m["coco_style"]["mAP"] is None and m["coco_standard"]["mAP"] is None
    assert m["paper"]["mAP"] is None and m["paper"]["patient_mAP"] is None


def test_pr_curve_is_rounded_to_four_decimals():
    # one image, objects at GT and FAR; ranked: TP (GT) 0.9, FP 0.8, TP (FAR) 0.3 -> precision 1, 1/2,
    # 2/3, monotone 1, 2/3, 2/3; recall 1/2 at the first TP: 51 points at 1, 50 points at 0.6667
    preds = [_img([GT, [20.0, 20, 30, 30], FAR], [0.9, 0.8, 0.3], [1, 1, 1])]
    m = detection_metrics(preds, [_gt([GT, FAR], [1, 1])], 1)
    assert m["curves"]["pr"]["precision"]["0.1"]["1"] == [1.0] * 51 + [0.6667] * 50
    assert m["curves"]["pr"]["recall"][:3] == [0.0, 0.01, 0.02] and m["curves"]["pr"]["recall"][-1] == 1.0
    assert m["ap_by_iou"]["0.1"]["1"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_coco_standard_block_by_hand():
    # IoU 0.45: a TP nowhere on 0.5:0.95 -> 0; IoU 0.72: TP at 0.5 .. 0.7 (5 of 10) -> 0.5
    gt = [0.0, 0.0, 10.0, 10.0]
    for side, expected in ((4.5, 0.0), (7.2, 0.5)):
        m = detection_metrics([_img([[0.0, 0.0, 10.0, side]], [0.9], [1])], [_gt([gt], [1])], 1)
        assert m["coco_standard"] == {"grid": list(COCO_IOU_GRID), "ap": {"1": pytest.approx(expected)},
                                      "mAP": pytest.approx(expected)}


def test_detection_metrics_settings_and_messages():
    # score_threshold 0 is allowed: a 0.05 prediction then counts
    m = detection_metrics([_img([GT], [0.05], [1])], [_gt([GT], [1])], 1, score_threshold=0.0)
    assert m["paper"]["ap"]["1"] == 1.0 and m["score_threshold"] == 0.0
    with pytest.raises(ValueError, match=r"^num_classes must be >= 1, got 0$"):
        detection_metrics([_img([GT], [0.9], [1])], [_gt([GT], [1])], 0)
    with pytest.raises(ValueError, match=r"^targets is empty: nothing to evaluate$"):
        detection_metrics([], [], 1)


def test_pooled_of_no_images():
    from retina_unet.evaluation.metrics import pooled

    scores, is_tp, n_gt = pooled([])
    assert scores.dtype == np.float64 and scores.shape == (0,) and is_tp.dtype == bool and is_tp.shape == (0,)
    assert n_gt == 0 and type(n_gt) is int


def test_froc_inputs_of_other_dtypes_and_shapes():
    # uint8 scores rank by value (0 below 3, not a wrapped 0 above it): TP (3) first, then FP (0)
    fpi, sens, thr = froc_curve(np.array([0, 3], np.uint8), [False, True], n_gt=1, n_images=1)
    assert fpi.tolist() == [0.0, 0.0, 1.0] and sens.tolist() == [0.0, 1.0, 1.0] and thr.tolist() == [np.inf, 3.0, 0.0]
    # columns and rows: flattened (the hand case's first three: TP, FP, FP over 4 images)
    fpi, sens, _ = froc_curve(np.array([[0.9], [0.8], [0.7]]), np.array([[1, 0, 0]]), n_gt=3, n_images=4)
    assert fpi.tolist() == [0, 0, 0.25, 0.5] and sens.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3])
    # no ground truth: sensitivity NaN throughout (float), whatever is_tp says
    fpi, sens, _ = froc_curve([0.9, 0.5], [True, False], n_gt=0, n_images=2)
    assert fpi.tolist() == [0.0, 0.0, 0.5] and sens.dtype == np.float64 and np.isnan(sens).all()
    with pytest.raises(ValueError, match=r"^scores \(2,\) and is_tp \(1,\) must have the same shape$"):
        froc_curve([0.9, 0.5], [True], 1, 1)
    # one rate gives a (1,) array; integer sensitivities come back as float64
    at = sensitivity_at(np.array([0.0, 1.0]), np.array([0, 1]), 0.5)
    assert at.shape == (1,) and at.dtype == np.float64 and at.tolist() == [0.0]
    assert sensitivity_at([0, 1], [0, 1], [1, 2]).tolist() == [1.0, 1.0]


def test_per_case_rows_labels_as_columns():
    # target labels given as a (G, 1) column: read as the flat list
    preds = [_img([GT], [0.9], [1])]
    flat = per_case_rows(preds, [_gt([GT, FAR], [1, 2])], 2)
    col = per_case_rows(preds, [{"boxes": np.array([GT, FAR]), "labels": np.array([[1], [2]])}], 2)
    assert col == flat and flat[0][0]["gt_found"] == "1;0"


# --- the metrics folder, its summary and its figures ----------------------------------------------------


def test_summary_lines_hand_case():
    # the FROC case (class 2 without objects): AP 47.2/101 = 0.467 at every IoU (the TPs are exact, IoU 1);
    # patient level: images 0 (0.9) and 1 (0.7) have the object, image 3 (0.6) not, image 2 has no
    # prediction -> precision 1 up to recall 2/3: 67/101 = 0.663; CPM 11/21 = 0.524
    from retina_unet.evaluation.export import summary_lines

    m = detection_metrics(*_froc_case(), num_classes=2)
    assert summary_lines(m) == [
        "mAP (IoU > 0.1): 0.467  per class 1: 0.467, 2: n/a",
        "COCO-style mAP (IoU 0.1:0.5, 5 thresholds): 0.467; standard COCO grid 0.5:0.95: 0.467",
        "mAP by IoU: >0.1: 0.467, >0.2: 0.467, >0.3: 0.467, >0.4: 0.467, >0.5: 0.467, >0.75: 0.467",
        "patient-level mAP: 0.663",
        "CPM (all classes): 0.524; sensitivity at 0.125: 0.333, 0.25: 0.333, 0.5: 0.333, 1: 0.667, 2: 0.667, "
        "4: 0.667, 8: 0.667 FPs/image",
    ]
    none = detection_metrics([_img([FAR], [0.9], [1])], [_gt([], [])], 1)
    assert summary_lines(none)[0] == "mAP (IoU > 0.1): n/a  per class 1: n/a"
    assert summary_lines(none)[3:] == ["patient-level mAP: n/a", "CPM (all classes): n/a; sensitivity at 0.125: n/a, "
                                       "0.25: n/a, 0.5: n/a, 1: n/a, 2: n/a, 4: n/a, 8: n/a FPs/image"]


def test_write_metrics_passes_its_settings_on(tmp_path):
    preds, tgts = _froc_case()
    kw = dict(iou_threshold=0.3, score_threshold=0.35, grid=[0.3, 0.6], fp_rates=(0.5, 2.0))
    m = write_metrics(tmp_path / "m", preds, tgts, 2, **kw)
    expected = detection_metrics(preds, tgts, 2, **kw)
    assert {k: v for k, v in m.items() if k not in ("meta", "files")} == expected
    assert m["meta"] == {"label": "run", "definitions": "docs/metrics.md"}
    assert m["files"] == ["metrics.json", "per_case.csv", "detections.csv", "pr.png", "froc.png"]
    cases, dets = per_case_rows(preds, tgts, 2, iou_threshold=0.3, score_threshold=0.35)
    with open(tmp_path / "m" / "per_case.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["case", "n_gt", "gt_classes", "gt_found", "gt_best_iou", "n_found", "n_missed",
                                     "all_found", "n_det", "n_tp", "n_fp", "best_iou", "top_class", "top_score",
                                     "score_c1", "score_c2"]
        assert list(reader) == [{k: str(v) for k, v in c.items()} for c in cases]
    with open(tmp_path / "m" / "detections.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["case", "rank", "class", "score", "tp", "iou", "matched_gt", "box"]
        # scores > 0.35: 0.9 (TP), 0.8, 0.7, 0.6 (FPs); 0.4 is kept too (TP of image 1)
        assert [(r["case"], r["score"], r["tp"]) for r in reader] == [
            ("0", "0.9", "1"), ("0", "0.8", "0"), ("1", "0.7", "0"), ("1", "0.4", "1"), ("3", "0.6", "0")]
    assert len(dets) == 5


def _figures(monkeypatch):
    """Capture every figure the plots module saves: [(figure, path, dpi)] (the files are still written)."""
    import retina_unet.atomic_io as atomic_io

    seen, real = [], atomic_io.save_figure_atomic

    def spy(fig, path, dpi=80):
        seen.append((fig, path, dpi))
        return real(fig, path, dpi)

    monkeypatch.setattr(atomic_io, "save_figure_atomic", spy)
    return seen


def test_pr_figure_shows_each_run_and_class(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    from retina_unet.evaluation.plots import plot_pr

    seen = _figures(monkeypatch)
    a = detection_metrics(*_froc_case(), num_classes=2)
    b = detection_metrics([_img([GT], [0.9], [1]), _img([], [], []), _img([], [], []), _img([], [], [])],
                          _froc_case()[1], 2)
    assert plot_pr({"a": a, "b": b}, tmp_path / "pr.png") == tmp_path / "pr.png"
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig, path, _), = seen
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["class 1", "class 2"] and path == tmp_path / "pr.png"
    assert [ax.get_xlabel() for ax in axes] == ["recall", "recall"] and axes[0].get_ylabel() == "precision (monotone)"
    for ax in axes:
        assert ax.get_xlim()[0] == 0 and 1 <= ax.get_xlim()[1] <= 1.05
        assert ax.get_ylim()[0] == 0 and 1 <= ax.get_ylim()[1] <= 1.05
    # per run: the primary threshold solid, IoU 0.75 dashed; one colour per run
    lines = axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a, IoU>0.1: AP 0.467", "a, IoU>0.75: AP 0.467",
                                                "b, IoU>0.1: AP 0.337", "b, IoU>0.75: AP 0.337"]
    assert [ln.get_linestyle() for ln in lines] == ["-", "--", "-", "--"]
    colours = [to_hex(ln.get_color()) for ln in lines]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [ln.get_label() for ln in lines]
    assert lines[0].get_xdata().tolist() == a["curves"]["pr"]["recall"]
    assert lines[0].get_ydata().tolist() == a["curves"]["pr"]["precision"]["0.1"]["1"]
    assert lines[3].get_ydata().tolist() == b["curves"]["pr"]["precision"]["0.75"]["1"]
    # class 2 has no objects: n/a, drawn as NaN
    assert axes[1].get_lines()[0].get_label() == "a, IoU>0.1: AP n/a"
    assert np.isnan(axes[1].get_lines()[0].get_ydata()).all()
    assert fig._suptitle.get_text() == "precision-recall, score > 0.1, 4 images"
    # only the primary threshold when asked, or when it is 0.75 itself
    seen.clear()
    plot_pr({"a": a}, tmp_path / "pr1.png", second_iou=None)
    plot_pr({"a": detection_metrics(*_froc_case(), num_classes=2, iou_threshold=0.75)}, tmp_path / "pr2.png")
    assert [[ln.get_label() for ln in f.axes[0].get_lines()] for f, _, _ in seen] == [
        ["a, IoU>0.1: AP 0.467"], ["a, IoU>0.75: AP 0.467"]]
    with pytest.raises(ValueError, match="^metrics must map at least one run label to a detection_metrics dict$"):
        plot_pr({}, tmp_path / "x.png")


def test_froc_figure_shows_each_run_class_and_all(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    from retina_unet.evaluation.metrics import FROC_CURVE_RATES
    from retina_unet.evaluation.plots import plot_froc

    seen = _figures(monkeypatch)
    a = detection_metrics(*_froc_case(), num_classes=2)
    b = detection_metrics(*_froc_case(), num_classes=2, score_threshold=0.5)
    assert plot_froc({"a": a, "b": b}, tmp_path / "froc.png") == tmp_path / "froc.png"
    (fig, _, _), = seen
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["class 1", "class 2", "all classes"]
    assert all(ax.get_xscale() == "log" and ax.get_xlabel() == "false positives per image" for ax in axes)
    assert axes[0].get_ylabel() == "sensitivity" and all(ax.get_ylim()[0] == 0 for ax in axes)
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["1/8", "1/4", "1/2", "1", "2", "4", "8"]
    assert axes[2].get_xticks().tolist() == list(FROC_FP_RATES)
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == ["a: CPM 0.524", "b: CPM 0.333"]
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["a: CPM n/a", "b: CPM n/a"]
    step, dots, step_b, _ = axes[2].get_lines()
    assert step.get_drawstyle() == "steps-post" and step.get_xdata().tolist() == list(FROC_CURVE_RATES)
    assert step.get_ydata().tolist() == a["curves"]["froc"]["sensitivity"]["all"]
    assert dots.get_marker() == "o" and dots.get_linestyle() == "None"
    assert dots.get_xdata().tolist() == list(FROC_FP_RATES) and dots.get_ydata().tolist() == pytest.approx(
        [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert to_hex(step.get_color()) == to_hex(dots.get_color()) != to_hex(step_b.get_color())
    assert fig._suptitle.get_text() == "FROC at IoU > 0.1, score > 0.1, 4 images"
    with pytest.raises(ValueError, match="^metrics must map at least one run label"):
        plot_froc({}, tmp_path / "x.png")


def test_write_metrics_headers_without_rows_and_figures_share_the_y_axis(tmp_path, monkeypatch):
    # no image has a prediction or an object: the CSVs still start with their header
    write_metrics(tmp_path / "m", [_img([], [], [])], [_gt([], [])], 1)
    assert (tmp_path / "m" / "detections.csv").read_text().splitlines() == ["case,rank,class,score,tp,iou,matched_gt,box"]
    assert (tmp_path / "m" / "per_case.csv").read_text().splitlines()[0] == (
        "case,n_gt,gt_classes,gt_found,gt_best_iou,n_found,n_missed,all_found,n_det,n_tp,n_fp,best_iou,top_class,"
        "top_score,score_c1")
    # the panels of a figure share the y axis (precision / sensitivity on one scale)
    from retina_unet.evaluation.plots import plot_froc, plot_pr

    seen = _figures(monkeypatch)
    m = detection_metrics(*_froc_case(), num_classes=2)
    plot_pr({"a": m}, tmp_path / "pr.png")
    plot_froc({"a": m}, tmp_path / "froc.png")
    for fig, _, _ in seen:
        assert all(fig.axes[0].get_shared_y_axes().joined(fig.axes[0], ax) for ax in fig.axes[1:])


def test_figures_log_axis_resolution_width_per_panel_and_gaps(tmp_path, monkeypatch):
    """The FROC x axis is log base 2 (the rates 1/8 ... 8 are powers of two, evenly spaced); the sensitivity
    axis shows 0 to 1 with a little headroom; a class without objects is drawn as NaN gaps (its None
    values become floats); both figures are saved at the module's DPI; every panel gets the same width
    (a 1-class figure is half / two thirds as wide as the 2-class one)."""
    from PIL import Image

    from retina_unet.evaluation.plots import DPI, plot_froc, plot_pr

    seen = _figures(monkeypatch)
    m2 = detection_metrics(*_froc_case(), num_classes=2)
    m1 = detection_metrics(*_froc_case(), num_classes=1)
    plot_froc({"a": m2}, tmp_path / "f2.png")
    plot_froc({"a": m1}, tmp_path / "f1.png")
    plot_pr({"a": m2}, tmp_path / "p2.png")
    plot_pr({"a": m1}, tmp_path / "p1.png")
    (f2, _, _), (f1, _, _), (p2, _, _), (p1, _, _) = seen
    for ax in f2.axes:
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert ax.get_ylim()[0] == 0 and 1 < ax.get_ylim()[1] <= 1.05
    step, dots = f2.axes[1].get_lines()  # class 2: no objects
    for line in (step, dots):
        y = np.asarray(line.get_ydata())
        assert y.dtype == np.float64 and np.isnan(y).all()
    for name in ("f2", "f1", "p2", "p1"):
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.info["dpi"] == pytest.approx((DPI, DPI), abs=0.01)
    assert f1.get_size_inches()[0] == pytest.approx(f2.get_size_inches()[0] * 2 / 3)
    assert p1.get_size_inches()[0] == pytest.approx(p2.get_size_inches()[0] / 2)
