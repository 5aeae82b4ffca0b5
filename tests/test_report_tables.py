"""The study report's tables on hand-made inputs (fast; no study is run): the result rows read from
result envelopes, the t intervals, per-cell summaries, paired differences and the text formats.

Every expected number is computed by hand in the comments (t quantiles from a t table)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from retina_unet.study.report.tables import (
    fmt_ci,
    markdown_table,
    paired_differences,
    result_rows,
    summarise,
    t_errorbar,
    t_interval,
)

T975_1 = 12.706204736174698  # t_{0.975, 1}
T975_2 = 4.302652729749464  # t_{0.975, 2}
T95_2 = 2.919985580355516  # t_{0.95, 2}


def _env(task, model, n, seed, m, run_id, runner=None, commit=None, **res):
    return {"spec": {"task": task, "dim": "2", "model": model, "n_train": str(n), "seed": str(seed)},
            "result": {"mAP": m, **res}, "runner": runner or {}, "run_id": run_id,
            **({"commit": commit} if commit else {})}


def test_result_rows_reads_every_field_of_an_envelope():
    env = _env("donuts_shape", "retina_unet", 20, 1, "0.25", "r1", runner={"wall_time_s": 12.5},
               ap={"2": 0.4, "1": "0.5"}, patient_mAP=None, patient_ap={"1": 0.3, "2": "x"},
               wall_s=99.0, train_s="bad", git_commit="abc123", resumed=True)
    df = result_rows([env])
    r = df.iloc[0]
    assert (r.task, r.dim, r.model, r.n_train, r.seed, r.run_id) == ("donuts_shape", 2, "retina_unet", 20, 1, "r1")
    assert isinstance(r["map"], float) and r["map"] == 0.25
    assert (r.ap_class1, r.ap_class2) == (0.5, 0.4)
    assert math.isnan(r.patient_map)
    assert r.patient_ap_class1 == 0.3 and math.isnan(r.patient_ap_class2)
    assert r.wall_time_s == 12.5  # the runner's clock wins over the result's own
    assert math.isnan(r.train_s)
    assert r.commit == "abc123" and bool(r.resumed) is True
    assert list(df.columns) == ["task", "dim", "model", "n_train", "seed", "map", "ap_class1", "ap_class2",
                                "patient_map", "patient_ap_class1", "patient_ap_class2", "wall_time_s", "train_s",
                                "commit", "resumed", "run_id"]


def test_result_rows_falls_back_to_the_results_clock_and_the_envelopes_commit():
    env = _env("circles_scale", "retina_net", 100, 0, 0.5, "r2", commit="def456", wall_s=7.0, train_s=3)
    env.pop("runner")  # older envelopes have no runner section
    r = result_rows([env]).iloc[0]
    assert r.wall_time_s == 7.0 and r.train_s == 3.0
    assert r.commit == "def456" and bool(r.resumed) is False
    assert math.isnan(r.patient_map)


def test_result_rows_sort_by_task_dim_model_then_largest_training_set_first_then_seed():
    envs = [
        _env("b_task", "m1", 20, 0, 0.1, "a"),
        _env("a_task", "m2", 20, 0, 0.2, "b"),
        _env("a_task", "m1", 20, 1, 0.3, "c"),
        _env("a_task", "m1", 100, 1, 0.4, "d"),
        _env("a_task", "m1", 100, 0, 0.5, "e"),
        _env("a_task", "m1", 20, 0, 0.6, "f"),
    ]
    df = result_rows(envs)
    assert list(df.run_id) == ["e", "d", "f", "c", "b", "a"]
    assert list(df.index) == list(range(6))


def test_result_rows_of_no_envelopes_is_an_empty_table_with_the_key_columns():
    df = result_rows([])
    assert df.empty
    assert list(df.columns) == ["task", "dim", "model", "n_train", "seed", "map", "patient_map", "wall_time_s",
                                "commit", "run_id"]


def test_t_interval_drops_missing_values_and_takes_the_level():
    mean, lo, hi, n = t_interval([1.0, None, math.nan, 3.0])
    # values 1, 3: sd = sqrt(2), se = 1, half = t_{0.975,1}
    assert (mean, n) == (2.0, 2)
    assert (lo, hi) == pytest.approx((2.0 - T975_1, 2.0 + T975_1), abs=1e-9)
    mean, lo, hi, n = t_interval([1.0, 2.0, 3.0], level=0.90)  # sd 1, half = t_{0.95,2} / sqrt(3)
    assert (lo, hi) == pytest.approx((2.0 - T95_2 / math.sqrt(3), 2.0 + T95_2 / math.sqrt(3)), abs=1e-9)
    empty = t_interval([])
    assert empty[3] == 0 and all(math.isnan(v) for v in empty[:3])
    assert t_interval([None, math.nan])[3] == 0


def test_t_errorbar_is_the_intervals_ends():
    lo, hi = t_errorbar([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2.0 - T975_2 / math.sqrt(3), 2.0 + T975_2 / math.sqrt(3)), abs=1e-9)


def _rows(rows, cols=("task", "dim", "model", "n_train", "seed", "map")):
    return pd.DataFrame(rows, columns=list(cols))


def test_summarise_per_cell_over_seeds():
    df = _rows([
        ("t", 2, "b", 20, 0, 0.2), ("t", 2, "b", 20, 1, 0.4),
        ("t", 2, "a", 100, 0, 0.9), ("t", 2, "a", 100, 1, 0.8), ("t", 2, "a", 100, 2, 0.7),
        ("t", 2, "a", 20, 0, 0.5),
    ])
    s = summarise(df)
    assert list(s.columns) == ["task", "dim", "model", "n_train", "mean", "ci_low", "ci_high", "n_seeds"]
    # sorted by (task, dim, model, n_train)
    assert list(zip(s.model, s.n_train, strict=True)) == [("a", 20), ("a", 100), ("b", 20)]
    assert list(s.n_seeds) == [1, 3, 2]
    assert s["mean"].tolist() == pytest.approx([0.5, 0.8, 0.3])
    assert math.isnan(s.ci_low[0]) and math.isnan(s.ci_high[0])
    half = T975_2 * 0.1 / math.sqrt(3)  # sd 0.1
    assert (s.ci_low[1], s.ci_high[1]) == pytest.approx((0.8 - half, 0.8 + half), abs=1e-9)
    half = T975_1 * (0.2 / math.sqrt(2)) / math.sqrt(2)  # sd 0.1414, 2 seeds
    assert (s.ci_low[2], s.ci_high[2]) == pytest.approx((0.3 - half, 0.3 + half), abs=1e-9)


def test_summarise_another_column():
    df = _rows([("t", 2, "a", 20, 0, 0.5, 0.1), ("t", 2, "a", 20, 1, 0.5, 0.3)],
               cols=("task", "dim", "model", "n_train", "seed", "map", "patient_map"))
    s = summarise(df, value="patient_map")
    assert s["mean"][0] == pytest.approx(0.2) and s.n_seeds[0] == 2
    assert summarise(df.iloc[:0]).empty and list(summarise(df.iloc[:0]).columns)[-1] == "n_seeds"


def test_paired_differences_of_other_models_and_values():
    df = _rows([
        ("t", 2, "mask_rcnn", 20, 0, 0.0, 0.6), ("t", 2, "mask_rcnn", 20, 1, 0.0, 0.5),
        ("t", 2, "faster_rcnn_plus", 20, 0, 0.0, 0.2), ("t", 2, "faster_rcnn_plus", 20, 1, 0.0, math.nan),
        ("t", 2, "mask_rcnn", 100, 0, 0.0, 0.9), ("t", 2, "mask_rcnn", 100, 1, 0.0, 0.8),
        ("t", 2, "faster_rcnn_plus", 100, 0, 0.0, 0.7), ("t", 2, "faster_rcnn_plus", 100, 1, 0.0, 0.4),
        ("t", 2, "retina_unet", 100, 0, 0.0, 0.1),
        ("u", 2, "mask_rcnn", 20, 0, 0.0, 0.6),  # no partner model: no row
    ], cols=("task", "dim", "model", "n_train", "seed", "map", "patient_map"))
    per_seed, summ = paired_differences(df, a="mask_rcnn", b="faster_rcnn_plus", value="patient_map")
    assert list(per_seed.columns) == ["task", "dim", "n_train", "seed", "diff"]
    # n_train ascending; seed 1 at n=20 has no faster_rcnn_plus value
    assert list(zip(per_seed.n_train, per_seed.seed, strict=True)) == [(20, 0), (100, 0), (100, 1)]
    assert per_seed["diff"].tolist() == pytest.approx([0.4, 0.2, 0.4])
    assert all(isinstance(s, int) for s in per_seed.seed.tolist())
    assert list(summ.columns) == ["task", "dim", "n_train", "mean", "ci_low", "ci_high", "n_pairs"]
    assert list(summ.n_train) == [20, 100] and list(summ.n_pairs) == [1, 2]
    assert summ["mean"].tolist() == pytest.approx([0.4, 0.3])
    half = T975_1 * (0.2 / math.sqrt(2)) / math.sqrt(2)
    assert (summ.ci_low[1], summ.ci_high[1]) == pytest.approx((0.3 - half, 0.3 + half), abs=1e-9)
    assert set(summ.task) == {"t"}


def test_paired_differences_default_to_retina_unet_minus_retina_net_on_map():
    df = _rows([("t", 2, "retina_unet", 20, 0, 0.7), ("t", 2, "retina_net", 20, 0, 0.2),
                ("t", 2, "mask_rcnn", 20, 0, 0.9)])
    per_seed, summ = paired_differences(df)
    assert per_seed["diff"].tolist() == pytest.approx([0.5])
    empty_seed, empty_summ = paired_differences(df[df.model != "retina_net"])
    assert empty_seed.empty and empty_summ.empty and list(empty_summ.columns)[-1] == "n_pairs"


def test_fmt_ci_and_markdown_table():
    assert fmt_ci(math.nan, math.nan, math.nan) == "–"
    assert fmt_ci(0.5, math.nan, math.nan) == "0.500"
    assert fmt_ci(0.5, 0.25, 0.75) == "0.500 [0.250, 0.750]"
    assert fmt_ci(0.123456, 0.1, 0.15, digits=2) == "0.12 [0.10, 0.15]"
    assert markdown_table(["a", "b"], [(1, "x"), (2.5, None)]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | None |"
    assert markdown_table(["only"], []) == "| only |\n|---|"


def test_result_rows_reads_the_patient_map_and_sorts_dims_ascending():
    envs = [_env("t", "m", 20, 0, 0.5, "d3", patient_mAP="0.75"), _env("t", "m", 20, 0, 0.5, "d2", patient_mAP=0.25)]
    envs[0]["spec"]["dim"] = 3
    df = result_rows(envs)
    assert list(df.run_id) == ["d2", "d3"] and list(df.dim) == [2, 3]
    assert list(df.patient_map) == [0.25, 0.75]


def test_summarise_keeps_the_keys_of_each_cell():
    df = _rows([("u", 3, "b", 20, 0, 0.1), ("t", 2, "a", 20, 0, 0.3)])
    s = summarise(df)
    assert list(zip(s.task, s.dim, s.model, s.n_train, strict=True)) == [("t", 2, "a", 20), ("u", 3, "b", 20)]


def test_paired_differences_sorted_by_cell_first_value_per_seed_and_skipping_cells_without_a_partner():
    df = _rows([
        ("t", 3, "retina_unet", 20, 0, 0.9), ("t", 3, "retina_net", 20, 0, 0.5),  # listed first, sorts last
        ("s", 2, "retina_unet", 100, 0, 0.8),  # no retina_net in this cell, sorted before the others
        ("t", 2, "retina_unet", 100, 0, 0.6), ("t", 2, "retina_net", 100, 0, 0.5),
        ("t", 2, "retina_unet", 100, 0, 0.0),  # a repeated (seed, model): the first value counts
        ("t", 2, "retina_unet", 20, 1, 0.7), ("t", 2, "retina_net", 20, 1, 0.4),
    ])
    per_seed, summ = paired_differences(df)
    assert list(zip(per_seed.task, per_seed.dim, per_seed.n_train, strict=True)) == [("t", 2, 20), ("t", 2, 100), ("t", 3, 20)]
    assert per_seed["diff"].tolist() == pytest.approx([0.3, 0.1, 0.4])
    assert list(zip(summ.task, summ.dim, summ.n_train, strict=True)) == [("t", 2, 20), ("t", 2, 100), ("t", 3, 20)]
    empty_seed, _ = paired_differences(df[df.model != "retina_net"])
    assert list(empty_seed.columns) == ["task", "dim", "n_train", "seed", "diff"]


def test_t_interval_computes_in_float64_for_float32_inputs():
    import numpy as np

    x32 = np.array([0.1, 0.2, 0.4], dtype=np.float32)  # e.g. mAPs read back as float32
    exact = [float(v) for v in x32]  # 0.10000000149, 0.20000000298, 0.40000000596
    mean, lo, hi, n = t_interval(x32)
    assert n == 3 and mean == pytest.approx(sum(exact) / 3, rel=0, abs=1e-15)
    assert mean != float(np.float32(sum(exact) / 3))  # what a float32 mean would give
