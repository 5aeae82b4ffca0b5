"""Tracking (metrics.csv, metrics_steps.csv, TensorBoard events), resume without duplicated rows,
stored test predictions reused by ``evaluate --metrics-out``, learning-curve figures and CLI."""

from __future__ import annotations

import csv
import json
import sys

import pytest

import retina_unet.training.tracking as tracking
from retina_unet.cli import main
from retina_unet.pipeline import write_run_metrics
from retina_unet.rundir import PREDICTIONS_FILE, load_predictions
from retina_unet.training import preset
from retina_unet.training.curves import load_curve, plot_learning_curves
from tests.test_training import TinySegDetector, _trainer, use_tiny_models  # noqa: F401

EPOCH_COLUMNS = ["epoch", "step", "loss", "loss_ce", "val_mAP", "val_ap_1", "val_ap_2", "lr", "train_s", "val_s",
                 "data_s", "compute_s", "data_fraction", "images_per_s", "peak_rss_mb", "peak_cuda_mb"]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _events(run):
    return list((run / tracking.TENSORBOARD_DIR).glob("events.out.tfevents.*"))


def test_every_epoch_and_step_is_tracked(tmp_path):
    t = _trainer(tmp_path, "r")
    history = t.fit()
    run = tmp_path / "r"
    rows = _rows(run / tracking.METRICS_CSV)
    assert list(rows[0]) == EPOCH_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [int(r["step"]) for r in rows] == [3, 6, 9]
    assert [float(r["loss"]) for r in rows] == pytest.approx([h["loss"] for h in history])
    for r in rows:
        assert float(r["images_per_s"]) > 0 and float(r["peak_rss_mb"]) > 0 and r["peak_cuda_mb"] == ""
        assert float(r["data_s"]) + float(r["compute_s"]) == pytest.approx(float(r["train_s"]), abs=1e-5)
    steps = _rows(run / tracking.STEPS_CSV)
    assert [int(s["step"]) for s in steps] == list(range(9)) and {"lr", "loss", "loss_ce", "data_s"} <= set(steps[0])
    assert _events(run)


def test_resume_does_not_duplicate_rows(tmp_path):
    _trainer(tmp_path, "r").fit(stop_after=2)
    run = tmp_path / "r"
    # an interrupted third attempt left a row and steps that last.pt does not know about
    with open(run / tracking.METRICS_CSV, "a") as fh:
        fh.write("3,9,9.9,9.9,0,0,0,0.01,1,1,0,1,0,1,1,\n")
    with open(run / tracking.STEPS_CSV, "a") as fh:
        fh.write("6,3,0.01,9.9,9.9,0,0\n")
    before = _rows(run / tracking.METRICS_CSV)[:2]
    t = _trainer(tmp_path, "r")
    assert t.try_resume() and t.epoch == 2
    t.fit()
    rows = _rows(run / tracking.METRICS_CSV)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and rows[:2] == before  # kept as written
    assert float(rows[2]["loss"]) == pytest.approx(t.history[2]["loss"]) and float(rows[2]["loss"]) != 9.9
    assert [int(s["step"]) for s in _rows(run / tracking.STEPS_CSV)] == list(range(9))
    # a finished run resumed again trains nothing and leaves the files alone
    t = _trainer(tmp_path, "r")
    assert t.try_resume() and t.fit() == t.history
    assert _rows(run / tracking.METRICS_CSV) == rows


def test_rows_of_untracked_epochs_are_rebuilt_from_history(tmp_path):
    _trainer(tmp_path, "r").fit(stop_after=1)
    (tmp_path / "r" / tracking.METRICS_CSV).unlink()  # as for a run started before tracking existed
    t = _trainer(tmp_path, "r")
    assert t.try_resume()
    t.fit(stop_after=1)
    rows = _rows(tmp_path / "r" / tracking.METRICS_CSV)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["data_s"] == "" and rows[1]["data_s"] != ""


def test_without_tensorboard_csv_only_and_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(tracking, "_warned_no_tensorboard", False)
    with pytest.warns(UserWarning, match="tensorboard is not installed") as record:
        _trainer(tmp_path, "a").fit(stop_after=1)
        _trainer(tmp_path, "b").fit(stop_after=1)
    assert len([w for w in record if "tensorboard" in str(w.message)]) == 1
    assert (tmp_path / "a" / tracking.METRICS_CSV).is_file() and not _events(tmp_path / "a")


@pytest.fixture
def smoke_run(tmp_path, monkeypatch):
    """A smoke-preset run end to end (tiny stand-in detector), as in test_training."""
    import retina_unet.pipeline as run

    use_tiny_models(monkeypatch)
    cfg = preset("smoke", 2, device="cpu", tta=False)
    res = run.train_and_evaluate(cfg, tmp_path / "run", data_root=tmp_path / "data", progress=False)
    return tmp_path / "run", tmp_path / "data", cfg, res


def test_smoke_training_tracks_and_stores_test_predictions(smoke_run, tmp_path):
    run, data, cfg, res = smoke_run
    rows = _rows(run / tracking.METRICS_CSV)
    assert len(rows) == cfg.epochs and set(EPOCH_COLUMNS) <= set(rows[0]) and _events(run)
    stored = load_predictions(run / PREDICTIONS_FILE)
    assert stored["n_images"] == stored["split_size"] == cfg.pool_test
    assert stored["members"] == [e["epoch"] for e in res["top_k"]]
    # the metrics folder reuses the stored predictions, and agrees with result.json
    m = write_run_metrics(run, tmp_path / "m", data_root=data)
    assert m["meta"]["predictions"] == "stored" and m["paper"]["mAP"] == pytest.approx(res["mAP"])
    assert m["n_images"] == cfg.pool_test
    part = write_run_metrics(run, tmp_path / "m3", n=3, data_root=data)
    assert part["meta"]["predictions"] == "stored" and part["n_images"] == 3
    # other inference settings: predicted again, and said why
    other = write_run_metrics(run, tmp_path / "m4", overrides={"merge": "nms"}, data_root=data)
    assert other["meta"]["predictions"] == "predicted" and "inference settings differ" in other["meta"]["why_predicted"]


def test_cli_evaluate_metrics_out_and_curves(smoke_run, tmp_path, capsys):
    run, data, _, res = smoke_run
    out = tmp_path / "metrics"
    assert main(["evaluate", str(run), "--metrics-out", str(out), "--data-root", str(data)]) == 0
    text = capsys.readouterr().out
    assert "stored predictions" in text and "CPM" in text
    for name in ("metrics.json", "per_case.csv", "detections.csv", "pr.png", "froc.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["meta"]["model"] == "retina_unet"
    assert main(["evaluate", str(run), "--checkpoint", str(run)]) == 2  # given twice
    png = tmp_path / "curves.png"
    assert main(["curves", str(run), str(run / "result.json"), "--labels", "csv,result", "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    assert main(["curves", str(tmp_path / "nowhere"), "--out", str(png)]) == 2


def test_load_curve_sources_agree(smoke_run, tmp_path):
    run, *_ = smoke_run
    a, b, c = load_curve(run), load_curve(run / "history.json"), load_curve(run / "result.json")
    assert [r["val_mAP"] for r in a] == pytest.approx([r["val_mAP"] for r in b])
    assert [r["loss"] for r in b] == [r["loss"] for r in c]
    assert plot_learning_curves({"a": a, "b": b}, tmp_path / "lc.png").stat().st_size > 0
    with pytest.raises(ValueError, match="curves must map"):
        plot_learning_curves({}, tmp_path / "x.png")


def test_study_report_learning_curves_figure(tmp_path):
    from retina_unet.study.report.figures import plot_learning_curves as study_curves

    envs = [{"spec": {"task": "donuts_shape", "dim": 2, "model": m, "n_train": n, "seed": s},
             "result": {"curve": [{"epoch": e, "val_mAP": 0.1 * e + 0.01 * s, "loss": 1.0 / e} for e in (1, 2, 3)]}}
            for m in ("retina_unet", "retina_net") for n in (20, 100, 1000) for s in (0, 1)]
    path, note = study_curves(envs, tmp_path / "lc.png")
    assert path.stat().st_size > 0 and note.startswith("3 panel(s) (n_train 1000, 100, 20), 12 run(s)")  # every size
    one_epoch = [{**e, "result": {"curve": e["result"]["curve"][:1]}} for e in envs]
    assert study_curves(one_epoch, tmp_path / "none.png")[0] is None


def test_save_predictions_for_older_runs(smoke_run, tmp_path):
    run, data, cfg, _ = smoke_run
    (run / PREDICTIONS_FILE).unlink()  # as for a run trained before predictions were stored
    first = write_run_metrics(run, tmp_path / "a", n=4, data_root=data, save=True)
    assert first["meta"]["predictions"] == "predicted" and load_predictions(run / PREDICTIONS_FILE)["n_images"] == 4
    again = write_run_metrics(run, tmp_path / "b", n=4, data_root=data)
    assert again["meta"]["predictions"] == "stored" and again["paper"] == first["paper"]
    more = write_run_metrics(run, tmp_path / "c", data_root=data, save=True)  # all images: not stored
    assert more["meta"]["predictions"] == "predicted" and "only 4 of the 8" in more["meta"]["why_predicted"]
    assert load_predictions(run / PREDICTIONS_FILE)["n_images"] == 4  # never replaced


def test_curves_labels_study_runs_by_run_id(tmp_path):
    from retina_unet.training.curves import load_curve, run_label

    rid = "donuts_shape-2d-retina_net-n20-s0-0123456789ab"
    run = tmp_path / "runs" / rid
    (run / "out").mkdir(parents=True)
    (run / "out" / "history.json").write_text(json.dumps([{"epoch": 1, "loss": 1.0, "val_mAP": 0.5}]))
    (tmp_path / "results").mkdir()
    env = {"run_id": rid, "result": {"curve": [{"epoch": 1, "loss": 1.0, "val_mAP": 0.5}]}}
    (tmp_path / "results" / f"{rid}.json").write_text(json.dumps(env))
    for given in (run, run / "out", run / "out" / "history.json", tmp_path / "results" / f"{rid}.json"):
        assert run_label(str(given)) == rid, given
        assert load_curve(given)[0]["val_mAP"] == 0.5, given
    assert run_label(str(tmp_path / "runs_s0")) == "runs_s0"
