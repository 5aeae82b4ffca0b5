"""The bootstrap over test images (retina_unet.evaluation.sampling_error), on hand-made cases."""

import numpy as np
import pytest
import torch

from retina_unet.evaluation import bootstrap_map, evaluate_detections


def _img(gt_boxes, pred_boxes=(), scores=()):
    return (
        {"boxes": torch.tensor(pred_boxes, dtype=torch.float32).reshape(-1, 4),
         "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.ones(len(scores), dtype=torch.int64)},
        {"boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.ones(len(gt_boxes), dtype=torch.int64)},
    )


def test_perfect_predictions_have_no_sampling_error():
    pairs = [_img([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0.9]) for _ in range(5)]
    preds, targets = zip(*pairs, strict=True)
    out = bootstrap_map(preds, targets, 1, [1, 3], reps=50)
    assert out[1] == out[3] == {"mean": 1.0, "sd": 0.0, "q025": 1.0, "q975": 1.0}


def test_hit_and_miss_draws_take_the_hand_computed_values():
    """Image A: one object found (AP 1 alone); image B: one object missed (AP 0 alone). A draw of two
    images is AA (AP 1), BB (AP 0) or AB in either order (recall 1/2 at precision 1: the 51 recall
    points 0, 0.01, ..., 0.5 of 101 have precision 1, so AP = 51/101); P(AB) = 1/2, so the mean of
    the draws tends to 1/4 + 51/202 = 0.5025."""
    a, b = _img([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0.9]), _img([[20, 20, 30, 30]])
    preds, targets = zip(a, b, strict=True)
    ab = evaluate_detections(preds, targets, 1)["mAP"]
    assert ab == pytest.approx(51 / 101)
    out = bootstrap_map(preds, targets, 1, [1, 2], reps=4000, seed=3)
    assert out[1]["mean"] == pytest.approx(0.5, abs=0.03) and out[1]["sd"] == pytest.approx(0.5, abs=0.01)
    assert out[2]["mean"] == pytest.approx(0.5025, abs=0.02)
    assert (out[2]["q025"], out[2]["q975"]) == (0.0, 1.0)
    # the same seed draws the same images
    assert bootstrap_map(preds, targets, 1, 2, reps=50, seed=1) == bootstrap_map(preds, targets, 1, 2, reps=50, seed=1)


def test_sd_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    pairs = [_img([[0, 0, 10, 10]], [[0, 0, 10, 10]] if rng.random() < 0.7 else [[50, 50, 60, 60]],
                  [float(rng.uniform(0.2, 1.0))]) for _ in range(200)]
    preds, targets = zip(*pairs, strict=True)
    out = bootstrap_map(preds, targets, 1, [25, 100], reps=300)
    assert out[100]["sd"] < 0.7 * out[25]["sd"]


@pytest.mark.parametrize("kwargs, match", [
    ({"n_images": 0}, "n_images"), ({"n_images": 5, "reps": 1}, "reps"),
])
def test_bad_arguments_are_named(kwargs, match):
    a = _img([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0.9])
    with pytest.raises(ValueError, match=match):
        bootstrap_map([a[0]], [a[1]], 1, **kwargs)
    with pytest.raises(ValueError, match="targets"):
        bootstrap_map([a[0]], [], 1, 1)
