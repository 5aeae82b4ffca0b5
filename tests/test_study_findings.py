"""The paper's claims on synthetic result rows: every claim reaches "supported", "consistent,
unresolved" and "contradicted" (and the rules' statistics are checked by hand).

Rows are built so that each case is decided by a wide margin: a per-seed noise pattern
(+s, -s, +s, -s) on one model only, so a paired difference has mean = the effect and sd =
s * 2/sqrt(3); with 4 seeds the 95% half-width is t_{0.975,3} * sd / 2 = 1.8373 * s.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from retina_unet.study.report.findings import (
    AGAINST,
    CONSISTENT,
    CONTRADICTED,
    NOT_MEASURED,
    SUPPORTED,
    Estimate,
    bounded_verdict,
    check_findings,
    combine,
    directional_verdict,
    min_detectable,
    seeds_needed,
)

SEEDS = (0, 1, 2, 3)
PATTERN = (1, -1, 1, -1)


def rows(task: str, values: dict[tuple[str, int], tuple[float, float]]) -> list[tuple]:
    """values: (model, n_train) -> (mAP, noise amplitude s); per seed mAP + s * PATTERN[seed]."""
    return [(task, 2, m, n, seed, v + s * PATTERN[seed]) for (m, n), (v, s) in values.items() for seed in SEEDS]


def frame(rs) -> pd.DataFrame:
    return pd.DataFrame(rs, columns=["task", "dim", "model", "n_train", "seed", "map"])


def finding(df: pd.DataFrame, key: str, task: str):
    [f] = [f for f in check_findings(df) if f.key == key and f.where == f"{task} 2D"]
    return f


def test_estimate_and_resolution_by_hand():
    est = Estimate.of([0.1 + 0.01 * p for p in PATTERN])
    sd = 0.01 * 2 / math.sqrt(3)
    assert est.mean == pytest.approx(0.1) and est.sd == pytest.approx(sd) and est.n == 4
    assert est.hi - est.mean == pytest.approx(3.182446305284263 * sd / 2)
    # MDD = (t_{0.975,3} + t_{0.80,3}) * sd / sqrt(4) with t_{0.80,3} = 0.9784723
    assert min_detectable(1.0, 4) == pytest.approx((3.182446305284263 + 0.97847231) / 2, abs=1e-6)
    assert min_detectable(1.0, 3) == pytest.approx((4.302652729749464 + 1.06066017) / math.sqrt(3), abs=1e-6)
    assert seeds_needed(1.0, 2.09) == 4 and seeds_needed(1.0, 2.07) == 5 and seeds_needed(1.0, 0.0) is None
    assert math.isnan(min_detectable(1.0, 1))


@pytest.mark.parametrize("lo, hi, mean, sign, want", [
    (0.01, 0.2, 0.1, +1, SUPPORTED), (-0.2, -0.01, -0.1, +1, CONTRADICTED), (-0.1, 0.2, 0.05, +1, CONSISTENT),
    (-0.2, 0.1, -0.05, +1, AGAINST), (-0.2, -0.01, -0.1, -1, SUPPORTED), (0.01, 0.2, 0.1, -1, CONTRADICTED),
    (-0.2, 0.1, -0.05, -1, CONSISTENT),
])
def test_directional_verdict(lo, hi, mean, sign, want):
    assert directional_verdict(Estimate(mean, lo, hi, 4, 0.1), sign) == want


@pytest.mark.parametrize("lo, hi, mean, side, want", [
    (-0.01, 0.019, 0.005, +1, SUPPORTED), (0.021, 0.1, 0.05, +1, CONTRADICTED), (-0.05, 0.05, 0.0, +1, CONSISTENT),
    (-0.01, 0.08, 0.03, +1, AGAINST), (0.0, 0.5, 0.2, -1, SUPPORTED), (-0.5, -0.03, -0.2, -1, CONTRADICTED),
    (-0.05, 0.05, 0.0, -1, CONSISTENT), (-0.1, 0.0, -0.03, -1, AGAINST),
])
def test_bounded_verdict(lo, hi, mean, side, want):
    assert bounded_verdict(Estimate(mean, lo, hi, 4, 0.1), side) == want


def test_one_seed_is_not_measured_and_combine_orders_verdicts():
    assert directional_verdict(Estimate.of([0.3]), +1) == NOT_MEASURED
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, CONSISTENT]) == CONSISTENT
    assert combine([SUPPORTED, AGAINST, CONSISTENT]) == AGAINST
    assert combine([SUPPORTED, CONTRADICTED, AGAINST]) == CONTRADICTED
    assert combine([SUPPORTED, NOT_MEASURED]) == NOT_MEASURED and combine([]) == NOT_MEASURED


# -- every claim: supported / consistent, unresolved / contradicted ------------------------------

def seg_best_rows(task, effect, noise):
    return rows(task, {("retina_unet", 1000): (0.8 + effect, noise), ("retina_unet", 20): (0.8 + effect, noise),
                       ("retina_net", 1000): (0.8, 0.0), ("retina_net", 20): (0.8, 0.0)})


@pytest.mark.parametrize("task", ["donuts_shape", "donuts_pattern"])
@pytest.mark.parametrize("effect, noise, want", [(0.1, 0.01, SUPPORTED), (0.01, 0.05, CONSISTENT),
                                                 (-0.1, 0.01, CONTRADICTED), (-0.01, 0.05, AGAINST)])
def test_seg_best(task, effect, noise, want):
    f = finding(frame(seg_best_rows(task, effect, noise)), "seg_best", task)
    assert f.verdict == want
    assert ("retina_unet", 20) in {(c[2], c[3]) for c in f.cells} and f.parts[0].est.mean == pytest.approx(effect)


def test_seg_best_compares_the_best_of_each_group():
    # Mask R-CNN (non-seg) beats Retina U-Net: the seg group is NOT best although it beats Retina Net.
    rs = seg_best_rows("donuts_shape", 0.1, 0.01) + rows("donuts_shape", {("mask_rcnn", 1000): (0.95, 0.0),
                                                                          ("mask_rcnn", 20): (0.95, 0.0)})
    f = finding(frame(rs), "seg_best", "donuts_shape")
    assert f.verdict == CONTRADICTED and f.parts[0].est.mean == pytest.approx(0.9 - 0.95)


@pytest.mark.parametrize("lead_small, lead_big, noise, want", [
    (0.3, 0.0, 0.01, SUPPORTED), (0.02, 0.0, 0.05, CONSISTENT), (0.0, 0.3, 0.01, CONTRADICTED)])
def test_lead_grows(lead_small, lead_big, noise, want):
    rs = rows("donuts_pattern", {("retina_unet", 1000): (0.6 + lead_big, noise), ("retina_unet", 20): (0.6 + lead_small, 0.0),
                                 ("retina_net", 1000): (0.6, 0.0), ("retina_net", 20): (0.6, 0.0)})
    f = finding(frame(rs), "lead_grows", "donuts_pattern")
    assert f.verdict == want and f.parts[0].est.mean == pytest.approx(lead_small - lead_big)


@pytest.mark.parametrize("small, noise, want", [(0.2, 0.01, SUPPORTED), (0.44, 0.05, CONSISTENT),
                                                (0.8, 0.01, CONTRADICTED)])
def test_collapse(small, noise, want):
    rs = rows("donuts_pattern", {("retina_net", 1000): (0.9, 0.0), ("retina_net", 20): (small, noise),
                                 ("retina_unet", 1000): (0.9, 0.0), ("retina_unet", 20): (0.9, 0.0)})
    f = finding(frame(rs), "collapse", "donuts_pattern")
    assert f.verdict == want and f.parts[0].est.mean == pytest.approx(small - 0.45)


def test_collapse_needs_every_non_seg_model():
    rs = rows("donuts_pattern", {("retina_net", 1000): (0.9, 0.0), ("retina_net", 20): (0.2, 0.01),
                                 ("mask_rcnn", 1000): (0.9, 0.0), ("mask_rcnn", 20): (0.85, 0.01)})
    assert finding(frame(rs), "collapse", "donuts_pattern").verdict == CONTRADICTED


@pytest.mark.parametrize("diff_small, noise, want", [(0.0, 0.005, SUPPORTED), (0.0, 0.05, CONSISTENT),
                                                     (0.1, 0.01, CONTRADICTED), (0.04, 0.05, AGAINST)])
def test_no_gain_on_scale(diff_small, noise, want):
    rs = rows("circles_scale", {("retina_unet", 1000): (0.7, 0.005), ("retina_net", 1000): (0.7, 0.0),
                                ("retina_unet", 20): (0.5 + diff_small, noise), ("retina_net", 20): (0.5, 0.0)})
    f = finding(frame(rs), "no_gain_scale", "circles_scale")
    assert f.verdict == want
    hi = [p.est.hi for p in f.parts if p.label.endswith("n=20")][0]
    assert f"gains above {hi:+.3f} excluded" in f.ours  # the largest gain the interval does not exclude


def test_no_gain_on_scale_checks_the_ufrcnn_pair_too():
    rs = rows("circles_scale", {("retina_unet", 20): (0.5, 0.005), ("retina_net", 20): (0.5, 0.0),
                                ("ufrcnn_plus", 20): (0.7, 0.01), ("faster_rcnn_plus", 20): (0.5, 0.0)})
    assert finding(frame(rs), "no_gain_scale", "circles_scale").verdict == CONTRADICTED


@pytest.mark.parametrize("effect, noise, want", [(0.1, 0.01, SUPPORTED), (0.01, 0.05, CONSISTENT),
                                                 (-0.1, 0.01, CONTRADICTED)])
def test_two_stage_best(effect, noise, want):
    rs = rows("circles_scale", {("faster_rcnn_plus", 1000): (0.7 + effect, noise), ("faster_rcnn_plus", 20): (0.5 + effect, noise),
                                ("retina_unet", 1000): (0.7, 0.0), ("retina_unet", 20): (0.5, 0.0),
                                ("retina_net", 1000): (0.65, 0.0), ("retina_net", 20): (0.45, 0.0)})
    f = finding(frame(rs), "two_stage_best", "circles_scale")
    assert f.verdict == want and f.parts[0].est.mean == pytest.approx(effect)


@pytest.mark.parametrize("task", ["donuts_shape", "donuts_pattern", "circles_scale"])
@pytest.mark.parametrize("gain_small, gain_big, noise, want", [
    (0.0, 0.2, 0.005, SUPPORTED),  # a gain at the LARGEST size must not count: the claim is about little data
    (0.0, 0.2, 0.05, CONSISTENT),
    (0.2, 0.0, 0.005, CONTRADICTED),
])
def test_mask_loss_at_the_smallest_size(task, gain_small, gain_big, noise, want):
    rs = rows(task, {("mask_rcnn", 1000): (0.7 + gain_big, 0.0), ("faster_rcnn_plus", 1000): (0.7, 0.0),
                     ("mask_rcnn", 100): (0.6 + gain_big, 0.0), ("faster_rcnn_plus", 100): (0.6, 0.0),
                     ("mask_rcnn", 20): (0.5 + gain_small, noise), ("faster_rcnn_plus", 20): (0.5, 0.0)})
    f = finding(frame(rs), "mask_loss", task)
    assert f.verdict == want and "n=20" in f.ours
    assert {c[3] for c in f.cells} == {20}


@pytest.mark.parametrize("task", ["donuts_shape", "circles_scale"])
@pytest.mark.parametrize("gap, noise, want", [(0.0, 0.005, SUPPORTED), (0.0, 0.05, CONSISTENT),
                                              (-0.2, 0.01, CONTRADICTED), (0.3, 0.01, SUPPORTED)])
def test_retina_unet_reaches_the_two_stage_level(task, gap, noise, want):
    rs = rows(task, {("retina_unet", 1000): (0.7 + gap, noise), ("retina_unet", 20): (0.5 + gap, noise),
                     ("mask_rcnn", 1000): (0.7, 0.0), ("mask_rcnn", 20): (0.5, 0.0),
                     ("faster_rcnn_plus", 1000): (0.6, 0.0), ("faster_rcnn_plus", 20): (0.4, 0.0)})
    f = finding(frame(rs), "unet_two_stage_level", task)
    assert f.verdict == want and f.parts[0].est.mean == pytest.approx(gap)


def test_claims_without_their_models_are_not_measured():
    df = frame(rows("donuts_shape", {("retina_unet", 20): (0.9, 0.01), ("retina_unet", 1000): (0.9, 0.01)}))
    found = {(f.key, f.where): f.verdict for f in check_findings(df)}
    assert set(found.values()) == {NOT_MEASURED}
    assert ("mask_loss", "circles_scale 2D") in found and ("two_stage_best", "circles_scale 2D") in found
    assert ("collapse", "donuts_pattern 2D") in found and ("no_gain_scale", "circles_scale 2D") in found


def test_resolution_names_mdd_and_seeds_needed():
    f = finding(frame(seg_best_rows("donuts_shape", 0.03, 0.05)), "seg_best", "donuts_shape")
    sd = 0.05 * 2 / math.sqrt(3)
    need = seeds_needed(sd, 0.03)
    assert f.verdict == CONSISTENT and 20 < need < 40  # ~ ((t + t) * sd / 0.03)^2 = 29
    assert f"MDD {min_detectable(sd, 4):.3f} with 4 seeds" in f.resolution() and f"needs ~{need}" in f.resolution()
    tiny = finding(frame(seg_best_rows("donuts_shape", 0.001, 0.05)), "seg_best", "donuts_shape")
    assert "needs ~> 200" in tiny.resolution()


# -- the rules' edges (each pinned by hand: see the module docstring of findings.py) -------------

from retina_unet.study.report.findings import Finding, Part  # noqa: E402

T975_1, T80_1 = 12.706204736174698, 1.3763819204711738  # t_{0.975,1}, t_{0.80,1}


def test_fewer_than_two_seeds_is_not_measured_even_with_an_interval():
    one = Estimate(0.5, 0.1, 0.9, 1, math.nan)  # an interval cannot come from one seed: n decides
    assert directional_verdict(one, +1) == NOT_MEASURED and bounded_verdict(one, +1) == NOT_MEASURED
    two = Estimate.of([0.1, 0.3])  # two seeds do give an interval: mean 0.2, half = t_{0.975,1} * 0.1
    assert (two.lo, two.hi) == pytest.approx((0.2 - T975_1 * 0.1, 0.2 + T975_1 * 0.1))
    assert directional_verdict(two, +1) == CONSISTENT and bounded_verdict(two, +1) == AGAINST
    assert min_detectable(1.0, 2) == pytest.approx((T975_1 + T80_1) / math.sqrt(2), abs=1e-9)


@pytest.mark.parametrize("lo, hi, mean, sign, want", [
    (0.0, 2.0, 1.0, +1, CONSISTENT),  # an interval touching 0 does not exclude it
    (-2.0, 0.0, -1.0, +1, AGAINST),
    (-1.0, 1.0, 0.0, +1, AGAINST),  # a mean of exactly 0 does not agree with "> 0"
    (-1.0, 1.0, 0.0, -1, AGAINST),
])
def test_directional_verdict_at_the_edges(lo, hi, mean, sign, want):
    assert directional_verdict(Estimate(mean, lo, hi, 3, 1.0), sign) == want


@pytest.mark.parametrize("lo, hi, mean, side, want", [
    (-0.5, 0.5, 0.0, +1, CONSISTENT),  # margin 0.5: an upper end AT the margin does not exclude it
    (0.5, 1.5, 1.0, +1, AGAINST),  # a lower end at the margin does not show a gain beyond it
    (-0.5, 1.5, 0.5, +1, AGAINST),  # a mean at the margin is not "below" it
])
def test_bounded_verdict_at_the_edges(lo, hi, mean, side, want):
    assert bounded_verdict(Estimate(mean, lo, hi, 3, 1.0), side, margin=0.5) == want


def test_seeds_needed_at_the_ends_of_its_range():
    # MDD(k) = (t_{0.975,k-1} + t_{0.80,k-1}) / sqrt(k) for sd 1: MDD(2) = 9.9579, MDD(199) = 0.199583,
    # MDD(200) = 0.199078, MDD(201) = 0.198577
    assert seeds_needed(1.0, 10.0) == 2 and seeds_needed(1.0, -10.0) == 2
    assert seeds_needed(1.0, 0.1993) == 200  # the last planned count is still planned
    assert seeds_needed(1.0, 0.1988) is None  # 201 would do: beyond the plan
    assert seeds_needed(math.nan, 0.1) is None and seeds_needed(1.0, math.nan) is None
    at = min_detectable(1.0, 5)
    assert seeds_needed(1.0, at) == 5  # a gap equal to the MDD with k seeds needs k seeds


def test_part_resolution_texts():
    assert Part("p", Estimate.of([0.3]), NOT_MEASURED, 0.0).resolution() == ""
    two = Part("p", Estimate.of([0.1, 0.3]), CONSISTENT, 0.0)
    assert two.resolution().startswith(f"MDD {min_detectable(two.est.sd, 2):.3f} with 2 seeds; observed gap 0.200")
    # bounded part: the gap is the mean's distance from the threshold (0.05 - 0.02 = 0.03, not 0.07)
    est = Estimate(0.05, -0.1, 0.2, 3, 0.02)
    r = Part("q", est, CONSISTENT, 0.02).resolution()
    assert "observed gap 0.030" in r and r.endswith(f"needs ~{seeds_needed(0.02, 0.03)}")
    assert seeds_needed(0.02, 0.03) != seeds_needed(0.02, 0.07)
    done = Part("r", Estimate(0.5, 0.4, 0.6, 3, 0.05), SUPPORTED, 0.0)
    assert done.resolution() == f"resolved; MDD {min_detectable(0.05, 3):.3f} with 3 seeds"


def test_finding_resolution_names_only_the_open_parts():
    est = Estimate(0.05, -0.1, 0.2, 3, 0.02)
    closed = Part("closed", Estimate(0.5, 0.4, 0.6, 3, 0.05), SUPPORTED, 0.0)
    a, b = Part("a", est, CONSISTENT, 0.0), Part("b", est, AGAINST, 0.0)
    f = Finding("k", "w", "p", "r", "o", CONSISTENT, [closed, a, b])
    assert f.resolution() == f"a: {a.resolution()}; b: {b.resolution()}"
    g = Finding("k", "w", "p", "r", "o", SUPPORTED, [closed])
    assert g.resolution() == f"closed: {closed.resolution()}"  # all resolved: all listed


def test_group_lead_skips_a_size_missing_one_group_and_lists_the_largest_size_first():
    rs = rows("donuts_shape", {("retina_unet", 1000): (0.8, 0.0), ("retina_unet", 100): (0.8, 0.01),
                               ("retina_net", 100): (0.7, 0.0), ("retina_unet", 20): (0.8, 0.01),
                               ("retina_net", 20): (0.6, 0.0)})
    f = finding(frame(rs), "seg_best", "donuts_shape")
    # n=1000 has no non-seg model: the leads are at 100 (0.1) and 20 (0.2), mean 0.15
    assert f.parts[0].est.mean == pytest.approx(0.15) and f.verdict == SUPPORTED
    assert f.ours.startswith("mean over sizes 0.150 [")
    assert f.ours.index("n=100: retina_unet - retina_net") < f.ours.index("; n=20: retina_unet - retina_net")
    assert f.parts[0].label == "mean over sizes"
    assert ("donuts_shape", 2, "retina_net", 20) in f.cells and ("donuts_shape", 2, "retina_unet", 1000) not in f.cells
    assert f.paper == "models with full segmentation supervision (Retina U-Net, U-FRCNN+) are best"
    assert f.rule == ("per seed, mean over sizes of (best seg-supervised - best non-seg) (best = highest mean at "
                      "that size); 95% CI > 0")


def test_texts_of_claims_that_are_not_measured():
    got = {(f.key, f.where): f for f in check_findings(frame([]))}
    assert {w for _, w in got} == {"donuts_shape 2D", "donuts_pattern 2D", "circles_scale 2D"}
    sb = got["seg_best", "donuts_shape 2D"]
    assert sb.ours == "needs a seg-supervised and a non-seg model"
    assert sb.paper.startswith("models with full segmentation") and sb.rule.startswith("per seed, mean over sizes")
    tb = got["two_stage_best", "circles_scale 2D"]
    assert tb.ours == "needs a two-stage and a one-stage model" and tb.paper == "two-stage detectors do best"
    assert tb.rule.startswith("per seed, mean over sizes of (best two-stage - best one-stage)")
    lg = got["lead_grows", "donuts_pattern 2D"]
    assert lg.paper == "the lead of the seg-supervised models grows as the training set shrinks"
    assert lg.rule == "per seed, (best seg - best non-seg) at the smallest size minus at the largest; 95% CI > 0"
    assert lg.ours == "needs both groups at >= 2 training sizes"
    for f in got.values():
        assert f.verdict == NOT_MEASURED and f.parts == [] and f.cells == frozenset()
        assert f.paper and f.rule and f.ours.startswith("needs ")


def test_no_gain_text_with_two_seeds_names_the_excluded_gains():
    rs = [("donuts_shape", 2, "mask_rcnn", 20, s, v) for s, v in [(0, 0.5), (1, 0.6)]]
    rs += [("donuts_shape", 2, "faster_rcnn_plus", 20, s, 0.5) for s in (0, 1)]
    f = finding(frame(rs), "mask_loss", "donuts_shape")
    # diffs 0, 0.1: mean 0.05, sd 0.0707, hi = 0.05 + t_{0.975,1} * 0.05
    assert f.ours.endswith(f"gains above {0.05 + T975_1 * 0.05:+.3f} excluded")
    one = frame(rs[:1] + rs[2:3])
    assert finding(one, "mask_loss", "donuts_shape").ours == "mask_rcnn - faster_rcnn_plus n=20: 0.000 (1 seeds)"


def test_estimate_of_drops_missing_values():
    est = Estimate.of([0.1, None, math.nan, 0.3])
    assert (est.n, est.mean) == (2, pytest.approx(0.2)) and est.sd == pytest.approx(math.sqrt(0.02))
    assert est.text() == f"0.200 [{0.2 - T975_1 * 0.1:.3f}, {0.2 + T975_1 * 0.1:.3f}] (2 seeds)"
    one = Estimate.of([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.sd) and math.isnan(one.lo)
    assert one.text() == "0.500 (1 seeds)"


def test_check_findings_lists_every_claim_per_task_and_dim_in_order():
    donuts = ["seg_best", "lead_grows", "collapse", "mask_loss", "unet_two_stage_level"]
    circles = ["no_gain_scale", "two_stage_best", "mask_loss", "unet_two_stage_level"]
    got = [(f.where, f.key) for f in check_findings(frame([]))]
    assert got == ([("donuts_shape 2D", k) for k in donuts] + [("donuts_pattern 2D", k) for k in donuts]
                   + [("circles_scale 2D", k) for k in circles])
    # 3D rows are checked apart from 2D rows, 2D first
    rs = [(t, d, m, n, s, v) for (t, d, m, n, s, v) in rows("circles_scale", {("mask_rcnn", 20): (0.5, 0.0),
                                                                               ("faster_rcnn_plus", 20): (0.5, 0.0)})]
    rs3 = [(t, 3, m, n, s, v) for (t, _, m, n, s, v) in rs]
    found = check_findings(frame(rs3 + [("donuts_shape", 2, "retina_net", 20, 0, 0.1)]))
    assert [f.where for f in found][::14] == ["donuts_shape 2D", "donuts_shape 3D"] and len(found) == 28
    verdicts = {(f.where, f.key): f.verdict for f in found}
    assert verdicts["circles_scale 3D", "mask_loss"] == SUPPORTED
    assert verdicts["circles_scale 2D", "mask_loss"] == NOT_MEASURED


def test_lead_grows_compares_the_smallest_with_the_largest_size():
    rs = rows("donuts_shape", {("retina_unet", 1000): (0.8, 0.0), ("retina_net", 1000): (0.8, 0.0),
                               ("retina_unet", 100): (0.9, 0.0), ("retina_net", 100): (0.5, 0.0),
                               ("retina_unet", 20): (0.7, 0.01), ("retina_net", 20): (0.5, 0.0)})
    f = finding(frame(rs), "lead_grows", "donuts_shape")
    # lead at 20: 0.2, at 1000: 0.0 (the 0.4 at 100 plays no part)
    assert f.parts[0].label == "n=20 vs n=1000" and f.parts[0].est.mean == pytest.approx(0.2)
    assert f.parts[0].threshold == 0.0 and f.verdict == SUPPORTED
    assert f.ours.startswith("lead at n=20 minus at n=1000: 0.200 [0.182, 0.218] (4 seeds) (lead n=20: 0.200 [")
    assert "; n=1000: 0.000 [0.000, 0.000] (4 seeds))" in f.ours
    assert {c[3] for c in f.cells} == {20, 1000} and {c[2] for c in f.cells} == {"retina_unet", "retina_net"}
    assert f.paper == "the lead of the seg-supervised models grows as the training set shrinks"
    assert f.rule == "per seed, (best seg - best non-seg) at the smallest size minus at the largest; 95% CI > 0"


def test_collapse_texts_parts_and_sizes_of_the_non_seg_models():
    rs = rows("donuts_pattern", {("retina_net", 1000): (0.8, 0.0), ("retina_net", 100): (0.3, 0.0),
                                 ("retina_net", 20): (0.2, 0.01),
                                 ("mask_rcnn", 1000): (0.9, 0.0), ("mask_rcnn", 20): (0.85, 0.01),
                                 ("retina_unet", 5): (0.9, 0.0)})  # a seg model's size is not the smallest
    f = finding(frame(rs), "collapse", "donuts_pattern")
    # per seed: retina_net 0.2 +- 0.01 - 0.8/2 = -0.2; mask_rcnn 0.85 +- 0.01 - 0.45 = 0.4; half-width 1.8373 * 0.01
    assert f.ours == ("retina_net: mAP n=20 0.200 vs n=1000 0.800; mAP(small) - mAP(large)/2 -0.200 [-0.218, -0.182] "
                      "(4 seeds); mask_rcnn: mAP n=20 0.850 vs n=1000 0.900; mAP(small) - mAP(large)/2 0.400 "
                      "[0.382, 0.418] (4 seeds)")
    assert [(p.label, p.verdict, p.threshold) for p in f.parts] == [("retina_net", SUPPORTED, 0.0),
                                                                    ("mask_rcnn", CONTRADICTED, 0.0)]
    assert f.verdict == CONTRADICTED
    assert f.cells == {("donuts_pattern", 2, m, n) for m in ("retina_net", "mask_rcnn") for n in (20, 1000)}
    assert f.paper == "models without segmentation supervision essentially collapse at the smallest size"
    assert f.rule == "per non-seg model and seed: mAP(smallest) - mAP(largest)/2; 95% CI < 0 for every such model"
    one_size = rows("donuts_pattern", {("retina_net", 20): (0.2, 0.01), ("retina_unet", 1000): (0.9, 0.0)})
    nm = finding(frame(one_size), "collapse", "donuts_pattern")
    assert nm.verdict == NOT_MEASURED and nm.ours == "needs a non-seg model at >= 2 training sizes"
    assert nm.paper == f.paper and nm.rule == f.rule


def test_no_gain_on_scale_parts_texts_and_cells():
    rs = rows("circles_scale", {("retina_unet", 1000): (0.7, 0.0), ("retina_net", 1000): (0.7, 0.0),
                                ("retina_unet", 20): (0.5, 0.0), ("retina_net", 20): (0.5, 0.0),
                                ("ufrcnn_plus", 20): (0.6, 0.0), ("faster_rcnn_plus", 20): (0.6, 0.0),
                                ("detunet", 20): (0.1, 0.0)})
    f = finding(frame(rs), "no_gain_scale", "circles_scale")
    labels = ["retina_unet - retina_net n=1000", "retina_unet - retina_net n=20", "ufrcnn_plus - faster_rcnn_plus n=20"]
    assert [p.label for p in f.parts] == labels and {p.threshold for p in f.parts} == {0.02}
    assert f.verdict == SUPPORTED  # every difference is 0 with no spread: upper bounds 0 < 0.02
    assert f.ours == "; ".join(f"{lab}: 0.000 [0.000, 0.000] (4 seeds), gains above +0.000 excluded" for lab in labels)
    assert f.cells == {("circles_scale", 2, m, n) for m, n in [("retina_unet", 1000), ("retina_net", 1000),
                                                               ("retina_unet", 20), ("retina_net", 20),
                                                               ("ufrcnn_plus", 20), ("faster_rcnn_plus", 20)]}
    assert f.paper == "segmentation supervision brings no gain"
    assert f.rule == ("Retina U-Net - Retina Net and U-FRCNN+ - Faster R-CNN+, per size, paired by seed: upper 95% "
                      "bound < 0.02 (supported) / lower bound > 0.02 (contradicted)")
    nm = finding(frame(rows("circles_scale", {("retina_unet", 20): (0.5, 0.0)})), "no_gain_scale", "circles_scale")
    assert nm.ours == "needs Retina U-Net and Retina Net (or U-FRCNN+ and Faster R-CNN+)" and nm.rule == f.rule
    assert nm.paper == f.paper


def test_mask_loss_at_the_smallest_size_both_models_ran():
    rs = rows("donuts_shape", {("mask_rcnn", 1000): (0.7, 0.0), ("faster_rcnn_plus", 1000): (0.7, 0.0),
                               ("mask_rcnn", 100): (0.6, 0.0), ("faster_rcnn_plus", 100): (0.6, 0.0),
                               ("mask_rcnn", 20): (0.9, 0.0)})  # Faster R-CNN+ did not run at 20
    f = finding(frame(rs), "mask_loss", "donuts_shape")
    assert [(p.label, p.threshold) for p in f.parts] == [("mask_rcnn - faster_rcnn_plus n=100", 0.02)]
    assert f.verdict == SUPPORTED
    assert f.cells == {("donuts_shape", 2, m, 100) for m in ("mask_rcnn", "faster_rcnn_plus")}
    assert f.paper == "Mask R-CNN's mask loss brings no gain over Faster R-CNN+ with little data"
    assert f.rule == ("Mask R-CNN - Faster R-CNN+ at the smallest size both ran, paired by seed: upper 95% bound "
                      "< 0.02")
    assert f.parts[0].est.mean == pytest.approx(0.0) and f.parts[0].est.n == 4
    nm = finding(frame(rs[-4:]), "mask_loss", "donuts_shape")
    assert nm.ours == "needs Mask R-CNN and Faster R-CNN+" and nm.paper == f.paper and nm.rule == f.rule
    # Faster R-CNN+ ran at a size Mask R-CNN did not: that size is not "both ran" either
    rs2 = rows("donuts_shape", {("mask_rcnn", 100): (0.6, 0.0), ("faster_rcnn_plus", 100): (0.6, 0.0),
                                ("faster_rcnn_plus", 20): (0.5, 0.0), ("retina_net", 10): (0.5, 0.0)})
    assert [p.label for p in finding(frame(rs2), "mask_loss", "donuts_shape").parts] == [
        "mask_rcnn - faster_rcnn_plus n=100"]


def test_retina_unet_two_stage_level_texts_and_parts():
    rs = rows("donuts_shape", {("retina_unet", 1000): (0.7, 0.01), ("retina_unet", 20): (0.5, 0.01),
                               ("mask_rcnn", 1000): (0.7, 0.0), ("mask_rcnn", 20): (0.5, 0.0),
                               ("retina_net", 20): (0.9, 0.0)})  # a one-stage model is not compared
    f = finding(frame(rs), "unet_two_stage_level", "donuts_shape")
    p = f.parts[0]
    assert (p.label, p.threshold, p.verdict) == ("mean over sizes", -0.02, SUPPORTED)
    assert f.ours.startswith("mean over sizes 0.000 [-0.018, 0.018] (4 seeds), losses beyond -0.018 excluded. "
                             "n=1000: retina_unet - mask_rcnn 0.000 [")
    assert "; n=20: retina_unet - mask_rcnn" in f.ours
    assert f.cells == {("donuts_shape", 2, m, n) for m in ("retina_unet", "mask_rcnn") for n in (20, 1000)}
    assert f.paper == "Retina U-Net reaches the level of the two-stage detectors"
    assert f.rule == ("per seed, mean over sizes of (Retina U-Net - best two-stage model); lower 95% bound > -0.02 "
                      "(supported) / upper bound < -0.02 (contradicted)")
    nm = finding(frame(rs[-4:]), "unet_two_stage_level", "donuts_shape")
    assert nm.ours == "needs Retina U-Net and a two-stage model" and nm.paper == f.paper and nm.rule == f.rule
