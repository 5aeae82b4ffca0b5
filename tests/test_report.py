"""The study report from synthetic result files: CSV, figures, CI maths, the findings check."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from retina_unet.study import LocalBackend, StudyDefinition, run_study
from retina_unet.study.report import write_report
from retina_unet.study.report.findings import FAILS, HOLDS, NOT_MEASURED, check_findings
from retina_unet.study.report.tables import paired_differences, summarise, t_interval
from retina_unet.study.testing import FakeEngine


def test_t_interval_on_a_hand_case():
    mean, lo, hi, n = t_interval([1.0, 2.0, 3.0])
    # sd = 1, se = 1/sqrt(3), t_{0.975, 2} = 4.302652729749464
    half = 4.302652729749464 / math.sqrt(3)
    assert (mean, n) == (2.0, 3)
    assert lo == pytest.approx(2.0 - half, abs=1e-12) and hi == pytest.approx(2.0 + half, abs=1e-12)
    assert t_interval([0.5])[:1] == (0.5,) and math.isnan(t_interval([0.5])[1])
    assert t_interval([0.7, 0.7])[1:3] == (0.7, 0.7)


def _df(rows):
    return pd.DataFrame(rows, columns=["task", "dim", "model", "n_train", "seed", "map"])


def test_paired_difference_pairs_by_seed_only():
    rows = [("donuts_shape", 2, "retina_unet", 20, s, v) for s, v in [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.5)]]
    rows += [("donuts_shape", 2, "retina_net", 20, s, v) for s, v in [(0, 0.5), (1, 0.6), (2, 0.1)]]  # seed 3 missing
    per_seed, summ = paired_differences(_df(rows))
    assert list(per_seed["seed"]) == [0, 1, 2]
    assert list(per_seed["diff"]) == pytest.approx([0.4, 0.2, 0.6])
    r = summ.iloc[0]
    mean, lo, hi, n = t_interval([0.4, 0.2, 0.6])  # sd 0.2 -> half = 4.3027 * 0.2 / sqrt(3)
    assert (r["mean"], r.ci_low, r.ci_high, r.n_pairs) == pytest.approx((0.4, 0.4 - 0.496827, 0.4 + 0.496827, 3), abs=1e-6)
    assert (mean, lo, hi, n) == pytest.approx((r["mean"], r.ci_low, r.ci_high, 3))


def test_findings_verdicts():
    rows = []
    for s in range(3):
        for n, unet, net in [(1000, 0.95, 0.94), (20, 0.90, 0.40)]:
            rows += [("donuts_shape", 2, "retina_unet", n, s, unet + s / 100), ("donuts_shape", 2, "retina_net", n, s, net)]
            rows += [("circles_scale", 2, "retina_unet", n, s, 0.6 + s / 100), ("circles_scale", 2, "retina_net", n, s, 0.6)]
    found = {(f.where, f.paper.split(" (")[0]): f for f in check_findings(_df(rows))}
    shape = {k[1]: f.verdict for k, f in found.items() if k[0] == "donuts_shape 2D"}
    assert shape["the segmentation lead grows as the training set shrinks"] == HOLDS
    assert shape["Retina U-Net >= Retina Net at every training size"] == HOLDS
    assert shape["models without segmentation supervision collapse at the smallest sizes"] == HOLDS
    assert shape["models with full segmentation supervision"] == HOLDS
    assert found[("circles_scale 2D", "two-stage detectors do best")].verdict == NOT_MEASURED
    assert found[("circles_scale 2D", "segmentation supervision brings no gain")].verdict == HOLDS  # CI spans 0
    assert all(f.verdict == NOT_MEASURED for k, f in found.items() if k[0] == "donuts_pattern 2D")
    # Reverse the effect: the finding must then fail.
    flipped = _df([(t, d, {"retina_unet": "retina_net", "retina_net": "retina_unet"}[m], n, s, v)
                   for t, d, m, n, s, v in rows])
    shape = {f.paper: f.verdict for f in check_findings(flipped) if f.where == "donuts_shape 2D"}
    assert shape["the segmentation lead grows as the training set shrinks"] == FAILS


def test_report_from_result_files(tmp_path):
    defn = StudyDefinition(name="rep", tasks=("donuts_shape", "circles_scale"), models=("retina_net", "retina_unet"),
                           n_train=(1000, 100, 20), seeds=(0, 1, 2), dims=(2,), train_preset="smoke")
    study = tmp_path / "study"
    summary = run_study(defn, study, engine=FakeEngine(), backend=LocalBackend(1), progress=False)
    assert summary.complete
    out = tmp_path / "report"
    readme = write_report(study, out, engine=FakeEngine())
    for name in ("README.md", "results.csv", "summary.csv", "paired_unet_minus_net.csv", "scaling.png",
                 "paired_difference.png"):
        assert (out / name).stat().st_size > 0, name
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 36
    for col in ("task", "dim", "model", "n_train", "seed", "map", "ap_class1", "ap_class2", "patient_map",
                "wall_time_s", "commit", "run_id"):
        assert col in df.columns, col
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 12 and (summ.n_seeds == 3).all()
    assert summ["mean"].to_numpy() == pytest.approx(summarise(df)["mean"].to_numpy())
    text = readme.read_text()
    assert "![scaling](scaling.png)" in text and "The paper's findings, checked" in text
    assert "| donuts_shape 2D | the segmentation lead grows as the training set shrinks" in text
    assert "**holds**" in text
    assert "Not measured in this study (task not in the grid): donuts_pattern" in text
    assert "example predictions unavailable" in text  # fake runs have no real checkpoints
    assert "python -m retina_unet.study report" in text and "wall time" in text


def test_report_of_an_empty_study(tmp_path):
    defn = StudyDefinition(name="e", tasks=("donuts_shape",), models=("retina_net",), n_train=(20,), seeds=(0,))
    run_study(defn, tmp_path / "s", engine=FakeEngine(), backend=LocalBackend(1), progress=False, max_runs=0)
    assert "No finished runs yet." in write_report(tmp_path / "s", tmp_path / "r", engine=FakeEngine()).read_text()


def test_results_of_older_configs_are_left_out(tmp_path):
    defn = StudyDefinition(name="e", tasks=("donuts_shape",), models=("retina_net", "retina_unet"), n_train=(20,),
                           seeds=(0,))
    run_study(defn, tmp_path / "s", engine=FakeEngine(), backend=LocalBackend(1), progress=False)

    class Changed(FakeEngine):  # the training presets changed since: other config hashes
        def resolve(self, spec):
            return {**super().resolve(spec), "lr": 0.5}

    text = write_report(tmp_path / "s", tmp_path / "r", engine=Changed()).read_text()
    assert "2 result file(s) from older training configs" in text and "No finished runs yet." in text


def test_regenerating_a_report_gives_identical_files(tmp_path, monkeypatch):
    """Twice from the same results: byte-identical files, each finding listed once, the machine named."""
    import time

    defn = StudyDefinition(name="twice", tasks=("donuts_shape",), models=("retina_net", "retina_unet"),
                           n_train=(1000, 100, 20), seeds=(0, 1), dims=(2,), train_preset="smoke")
    study = tmp_path / "study"
    run_study(defn, study, engine=FakeEngine(), backend=LocalBackend(1), progress=False)
    for env_path in (study / "results").glob("*.json"):  # as real runs carry it
        import json

        env = json.loads(env_path.read_text())
        env["result"]["environment"] = {"cpu": "Test CPU 9000", "cpu_count": 2, "torch": "2.x", "platform": "Linux"}
        env_path.write_text(json.dumps(env))
    first = write_report(study, tmp_path / "a", engine=FakeEngine())
    write_report(study, tmp_path / "a2", engine=FakeEngine(), command="same")
    later = time.time() + 86400 * 400  # a report that printed the clock would differ now
    real_gmtime, real_localtime = time.gmtime, time.localtime
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "gmtime", lambda t=None: real_gmtime(later if t is None else t))
    monkeypatch.setattr(time, "localtime", lambda t=None: real_localtime(later if t is None else t))
    write_report(study, tmp_path / "b", engine=FakeEngine(), command="same")
    write_report(study, tmp_path / "b", engine=FakeEngine(), command="same")  # over an existing report
    names = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "a2").iterdir())
    for name in names:
        assert (tmp_path / "a2" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    text = first.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| donuts_shape 2D |") and "**" in ln]
    assert len(rows) == len(set(rows)) == 4
    assert "Test CPU 9000 x 2, no GPU, torch 2.x" in text and "not across CPUs" in text
