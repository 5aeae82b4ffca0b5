"""Overlays: PNG sizes for 2D / 3D cases and grids, input errors, per-case scores and ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retina_unet.visualize import (
    CaseScore,
    case_panels,
    case_score,
    draw_best_worst,
    draw_case,
    figure_size_px,
    rank_cases,
)

RNG = np.random.default_rng(0)
IMG2 = RNG.random((40, 32)).astype(np.float32)
VOL = RNG.random((12, 20, 16)).astype(np.float32)
GT2 = {"boxes": np.array([[5.0, 4, 15, 14]]), "labels": np.array([1])}
PRED2 = {
    "boxes": torch.tensor([[5.0, 5, 15, 14], [20, 20, 30, 30]]),
    "scores": torch.tensor([0.9, 0.05]),
    "labels": torch.tensor([1, 2]),
}
GT3 = {"boxes": np.array([[1.0, 2, 3, 5, 8, 9], [6, 10, 8, 11, 18, 15]]), "labels": np.array([1, 2])}
PRED3 = {"boxes": np.array([[1.0, 2, 3, 5, 8, 10]]), "scores": np.array([0.7]), "labels": np.array([1])}


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.mode == "P"  # palette PNG: small files for noisy toys
        return im.size


def test_2d_case_png_size(tmp_path):
    seg = np.stack([1 - (IMG2 > 0.5), IMG2 > 0.5]).astype(np.float32)  # (C+1, H, W) probabilities
    p = draw_case(IMG2, tmp_path / "a.png", 2, gt=GT2, pred=PRED2, seg=seg, title="case a")
    assert _size(p) == figure_size_px(1, 1, title=False) == (240, 256)
    # channels-first input, integer class map as seg, no title
    p = draw_case(IMG2[None], tmp_path / "b.png", 2, pred=PRED2, seg=(IMG2 > 0.5).astype(np.uint8))
    assert _size(p) == figure_size_px(1, 1, title=False)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_3d_case_has_a_slice_per_object_and_a_projection(tmp_path):
    panels = case_panels(VOL, 3, gt=GT3, pred=PRED3)
    assert [p.caption for p in panels] == [
        "object 1: slice 3",
        "object 2: slice 8",
        "max projection (axis 0)",
    ]
    assert all(p.image.shape == (20, 16) for p in panels)
    # object 1's slice shows its gt and the prediction crossing it; object 2's slice only its gt
    assert [b[-1] for b in panels[0].boxes] == ["gt c1", "c1 0.70"] and [b[-1] for b in panels[1].boxes] == [
        "gt c2"
    ]
    assert len(panels[2].boxes) == 3 and panels[2].boxes[0][:4] == (2.0, 3.0, 8.0, 9.0)  # axes (1, 2)
    p = draw_case(
        VOL, tmp_path / "v.png", 3, gt=GT3, pred=PRED3, seg=np.zeros((3, *VOL.shape), np.float32), title="v"
    )
    assert _size(p) == figure_size_px(1, 3, title=True) == (720, 284)
    # nothing to centre on: the middle slice and the projection
    p = draw_case(VOL[None], tmp_path / "w.png", 3, max_objects=1)
    assert _size(p) == figure_size_px(1, 2, title=False)
    assert [q.caption for q in case_panels(VOL, 3)] == ["slice 6", "max projection (axis 0)"]


def test_focus_window_stays_inside_the_image():
    (panel,) = case_panels(IMG2, 2, gt=GT2, focus_px=16)
    lo0, lo1, hi0, hi1 = panel.window
    assert hi0 - lo0 == hi1 - lo1 == 16 and 0 <= lo0 and 0 <= lo1 and hi1 <= 32
    (panel,) = case_panels(IMG2, 2, gt=GT2, focus_px=500)
    assert panel.window[2] - panel.window[0] == 40  # never larger than the image


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(image=np.zeros((2, 3, 8, 8)), spatial_dims=2),
            r"image: expected a 2D image \(H, W\) or \(C, H, W\)",
        ),
        (dict(image=np.zeros((8, 8)), spatial_dims=3), r"expected a 3D image \(D, H, W\)"),
        (dict(image=np.zeros((8, 8), bool), spatial_dims=2), "float or integer"),
        (dict(image=np.full((8, 8), np.nan), spatial_dims=2), "NaN or inf"),
        (dict(image=IMG2, spatial_dims=4), "spatial_dims: expected 2 or 3"),
        (
            dict(image=IMG2, spatial_dims=2, gt={"boxes": np.zeros((1, 6)), "labels": [1]}),
            r"gt: 'boxes' must have shape \(1, 4\)",
        ),
        (dict(image=IMG2, spatial_dims=2, gt={"boxes": np.zeros((1, 4))}), "gt: missing 'labels'"),
        (
            dict(image=IMG2, spatial_dims=2, pred={"boxes": np.zeros((1, 4)), "labels": [1]}),
            "pred: missing 'scores'",
        ),
        (
            dict(image=IMG2, spatial_dims=2, pred={**PRED2, "scores": torch.zeros(3)}),
            r"'scores' must have shape \(2,\)",
        ),
        (dict(image=IMG2, spatial_dims=2, gt={"boxes": [[0, 0, np.inf, 1]], "labels": [1]}), "NaN or inf"),
        (dict(image=IMG2, spatial_dims=2, seg=np.zeros((3, 8, 8))), r"seg: expected \(C\+1, \*S\)"),
    ],
)
def test_bad_overlay_inputs(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_case(path=tmp_path / "x.png", **kwargs)
    assert not list(tmp_path.iterdir())


def test_case_score_definition():
    perfect = {"boxes": GT2["boxes"], "scores": np.array([0.8]), "labels": np.array([1])}
    assert case_score(0, perfect, GT2, 2).score == pytest.approx(0.8)  # IoU 1 x score 0.8, no FP
    s = case_score(1, PRED2, GT2, 2)  # IoU 0.9, score 0.9; the 0.05 box is dropped (<= 0.1)
    assert s.score == pytest.approx(0.81) and (s.n_tp, s.n_fp, s.n_missed) == (1, 0, 0)
    wrong = {"boxes": GT2["boxes"], "scores": np.array([0.7]), "labels": np.array([2])}
    s = case_score(2, wrong, GT2, 2)  # a miss and a confident false positive
    assert s.score == pytest.approx(-0.7) and (s.n_tp, s.n_fp, s.n_missed) == (0, 1, 1)
    none = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    empty_gt = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    assert case_score(3, none, empty_gt, 2).score == 0.0
    assert case_score(4, wrong, empty_gt, 2).score == pytest.approx(-0.7)


def test_rank_cases_best_worst_disjoint_and_tie_order():
    scores = [CaseScore(i, s, 1, 1, 0, 0.0) for i, s in enumerate([0.5, 0.9, 0.5, -0.2, 0.1])]
    best, worst = rank_cases(scores, 2)
    assert [c.index for c in best] == [1, 0] and [c.index for c in worst] == [3, 4]
    best, worst = rank_cases(scores[:3], 2)
    assert [c.index for c in best] == [1, 0] and [c.index for c in worst] == [2]
    with pytest.raises(ValueError, match="n: expected an integer >= 1"):
        rank_cases(scores, 0)


@pytest.mark.parametrize("dim", [2, 3])
def test_best_worst_grid_size(tmp_path, dim):
    image, gt, pred = (IMG2, GT2, PRED2) if dim == 2 else (VOL, GT3, PRED3)
    cases = [
        (case_score(i, pred, gt, 2), {"image": image, "name": f"c{i}", "gt": gt, "pred": pred})
        for i in range(3)
    ]
    p = draw_best_worst(tmp_path / "g.png", cases[:2], cases[2:], dim, title="grid")
    per_case = 1 if dim == 2 else 2
    assert _size(p) == figure_size_px(2, 2 * per_case, title=True)


def test_overlays_are_never_smaller_than_the_input(tmp_path):
    """A 320 x 320 input gets a 320 px panel (one figure pixel per image pixel), not a 240 px one."""
    img = RNG.random((320, 300)).astype(np.float32)
    gt = {"boxes": np.array([[100.0, 100, 140, 140]]), "labels": np.array([2])}
    p = draw_case(img, tmp_path / "big.png", 2, gt=gt, pred=PRED2, title="big")
    assert _size(p) == figure_size_px(1, 1, title=False, panel_px=320) == (320, 336)
    vol = RNG.random((8, 300, 280)).astype(np.float32)
    p = draw_case(vol, tmp_path / "vol.png", 3, gt={"boxes": np.array([[1.0, 10, 10, 5, 50, 50]]),
                                                     "labels": np.array([1])}, title="vol")
    assert _size(p) == figure_size_px(1, 2, title=True, panel_px=300)


def test_one_palette_for_preview_overlays_and_study_examples():
    """The class colours and the legend come from toy_data.palette everywhere."""
    import inspect

    import toy_data.preview
    from retina_unet.study.report import figures
    from retina_unet.visualize import overlays
    from toy_data.palette import CLASS_COLOURS, legend

    assert overlays.LEGEND == legend() and "cyan: class 1, magenta: class 2" in legend()
    assert overlays.CLASS_COLOURS is CLASS_COLOURS
    for module in (toy_data.preview, figures, overlays):
        src = inspect.getsource(module)
        assert "class_colour" in src, module.__name__
        for stray in ('"tab:red"', '"tab:orange"', '"lime"', 'colors = {1:'):
            assert stray not in src, (module.__name__, stray)
