"""The study report from synthetic result files: CSV, figures, CI maths, the findings check."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from retina_unet.study import LocalBackend, StudyDefinition, run_study
from retina_unet.study.report import write_report
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


def _fake_study(tmp_path, models=("retina_net", "retina_unet", "mask_rcnn", "faster_rcnn_plus", "detunet")):
    defn = StudyDefinition(name="rep", tasks=("donuts_shape", "circles_scale"), models=models,
                           n_train=(1000, 100, 20), seeds=(0, 1, 2), dims=(2,), train_preset="smoke")
    study = tmp_path / "study"
    summary = run_study(defn, study, engine=FakeEngine(), backend=LocalBackend(1), progress=False)
    assert summary.complete
    return study, len(defn.runs())


def test_report_from_result_files(tmp_path):
    study, total = _fake_study(tmp_path)
    out = tmp_path / "report"
    readme = write_report(study, out, engine=FakeEngine())
    for name in ("README.md", "results.csv", "summary.csv", "paired_differences.csv", "findings.csv",
                 "per_class_ap.csv", "scaling.png", "paired_difference.png"):
        assert (out / name).stat().st_size > 0, name
    df = pd.read_csv(out / "results.csv")
    assert len(df) == total == 90
    for col in ("task", "dim", "model", "n_train", "seed", "map", "ap_class1", "ap_class2", "patient_map",
                "wall_time_s", "commit", "run_id"):
        assert col in df.columns, col
    summ = pd.read_csv(out / "summary.csv")
    assert len(summ) == 30 and (summ.n_seeds == 3).all()
    assert summ["mean"].to_numpy() == pytest.approx(summarise(df)["mean"].to_numpy(), abs=1e-5)
    paired = pd.read_csv(out / "paired_differences.csv")
    assert set(paired.comparison) == {"retina_unet - retina_net", "retina_unet - mask_rcnn", "retina_unet - detunet"}
    assert len(paired) == 3 * 2 * 3 and (paired.n_pairs == 3).all()
    per_class = pd.read_csv(out / "per_class_ap.csv")
    assert set(per_class["class"].astype(str)) == {"1", "2"} and len(per_class) == 5 * 3 * 2
    findings = pd.read_csv(out / "findings.csv")
    mask = findings[(findings.claim == "mask_loss") & (findings["where"] == "donuts_shape 2D")].iloc[0]
    assert mask.verdict != "not measured" and "n=20" in mask.ours
    text = readme.read_text()
    assert "![scaling](scaling.png)" in text and "The paper's findings, checked" in text
    assert "| donuts_shape 2D | the lead of the seg-supervised models grows as the training set shrinks" in text
    assert "**supported**" in text and "holds" not in text
    assert "Not measured in this study (task not in the grid): donuts_pattern" in text
    assert "example predictions unavailable" in text  # fake runs store no predictions
    assert "python -m retina_unet.study report" in text and "wall time" in text and "- machine(s) of the runs: " in text


def test_regenerating_a_report_gives_identical_files(tmp_path):
    study, _ = _fake_study(tmp_path, models=("retina_net", "retina_unet"))
    a, b = tmp_path / "a", tmp_path / "b"
    write_report(study, a, engine=FakeEngine(), command="cmd")
    write_report(study, b, engine=FakeEngine(), command="cmd")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "scaling.png" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


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


def test_report_ignores_the_clock_and_names_the_machine(tmp_path, monkeypatch):
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
        env.setdefault("runner", {}).update(cpu="Test CPU 9000", cpus=2)
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
    assert rows and len(rows) == len(set(rows))  # each finding listed once
    assert "Test CPU 9000, 2 cpus" in text and "torch 2.x" in text and "not across CPUs" in text


@pytest.mark.slow
def test_report_draws_examples_from_stored_predictions_and_regenerates_identically(tmp_path):
    """A real (smoke-preset) run: the example panel comes from the run's test_predictions.pt, and
    nothing is re-run (the model files are removed before the report)."""
    defn = StudyDefinition(name="real", tasks=("donuts_shape",), models=("retina_net",), n_train=(8,), seeds=(0,),
                           train_preset="smoke")
    study = tmp_path / "s"
    assert run_study(defn, study, backend=LocalBackend(1), progress=False, data_root=tmp_path / "data").complete
    for ckpt in study.glob("runs/*/out/*.pt"):
        if ckpt.name != "test_predictions.pt":
            ckpt.unlink()
    a, b = tmp_path / "a", tmp_path / "b"
    text = write_report(study, a, command="cmd").read_text()
    write_report(study, b, command="cmd")
    assert "1 run(s) drawn" in text and (a / "examples.png").stat().st_size > 0
    for p in sorted(a.iterdir()):
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name


def test_report_from_a_results_table_recomputes_the_same_findings(tmp_path):
    """`study report --from-results`: the findings of a results table alone equal the study
    folder's; the source table is left byte-for-byte as it was when the report goes beside it."""
    from retina_unet.study.cli import main as study_main

    study, _ = _fake_study(tmp_path)
    full = tmp_path / "full"
    write_report(study, full, engine=FakeEngine())
    table = tmp_path / "table"
    table.mkdir()
    (table / "results.csv").write_bytes((full / "results.csv").read_bytes())
    before = (table / "results.csv").read_bytes()
    assert study_main(["report", "--from-results", str(table / "results.csv"), "--report-dir", str(table)]) == 0
    assert (table / "results.csv").read_bytes() == before
    got = pd.read_csv(table / "findings.csv")
    want = pd.read_csv(full / "findings.csv")
    assert list(got["verdict"]) == list(want["verdict"]) and len(got) > 0
    assert "no study folder" in (table / "README.md").read_text()
    assert study_main(["report", "--from-results", str(tmp_path / "nope.csv"), "--report-dir", str(table)]) == 2


def test_report_warns_when_the_study_trains_on_a_shorter_schedule():
    from retina_unet.study.definition import preset as study_preset
    from retina_unet.study.report import _short_schedule

    line = _short_schedule(study_preset("quick"))
    assert line is not None and "240 steps per run, 30% of the `cpu` preset's 800" in line
    assert _short_schedule(study_preset("standard")) is None and _short_schedule(study_preset("smoke")) is None
