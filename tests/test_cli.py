"""CLI smoke tests (tiny): train then evaluate, overrides, errors, the real models when present."""

from __future__ import annotations

import json

import pytest

from retina_unet import cli
from tests.test_training import TinySegDetector, use_tiny_models  # noqa: F401


@pytest.fixture
def tiny_models(monkeypatch):
    use_tiny_models(monkeypatch)


def test_train_then_evaluate(tmp_path, tiny_models, capsys):
    out, data = tmp_path / "run", tmp_path / "data"
    rc = cli.main(
        [
            "train",
            "--preset",
            "smoke",
            "--model",
            "retina_unet",
            "--task",
            "donuts_shape",
            "--dim",
            "2",
            "--n-train",
            "8",
            "--seed",
            "1",
            "--out",
            str(out),
            "--data-root",
            str(data),
            "--quiet",
            "--set",
            "epochs=1",
            "--set",
            "device='cpu'",
        ]
    )
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["n_train"] == 8 and res["config"]["epochs"] == 1 and res["seed"] == 1
    capsys.readouterr()
    rc = cli.main(
        [
            "evaluate",
            "--checkpoint",
            str(out),
            "--data-root",
            str(data),
            "--split",
            "val",
            "--set",
            "tta=False",
            "--out",
            str(tmp_path / "eval.json"),
        ]
    )
    assert rc == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["n_members"] == 1 and ev["n_images"] == res["config"]["pool_val"]
    capsys.readouterr()
    assert cli.main(["summarize", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| model |" in table and "donuts_shape 2D" in table
    ep = next(out.glob("epoch_*.pt"))
    assert cli.main(["evaluate", "--checkpoint", str(ep), "--data-root", str(data), "--n", "3"]) == 0


def test_finished_run_left_untouched_evaluate_reuses_no_resume_starts_over(tmp_path, tiny_models, capsys):
    out, data = tmp_path / "run", tmp_path / "data"
    train = ["train", "--preset", "smoke", "--n-train", "8", "--out", str(out), "--data-root", str(data), "--quiet",
             "--set", "epochs=1", "--set", "device=cpu"]
    assert cli.main(train) == 0
    res = json.loads((out / "result.json").read_text())
    capsys.readouterr()
    stamps = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    # 1. a finished run is left untouched, and train says where its result is
    assert cli.main(train) == 0
    said = capsys.readouterr().out
    assert "left untouched" in said and str(out / "result.json") in said and "--re-evaluate" in said
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == stamps
    # 2. evaluate (without --metrics-out) reuses the stored predictions, and agrees with result.json
    assert cli.main(["evaluate", str(out), "--data-root", str(data), "--out", str(tmp_path / "e.json")]) == 0
    assert "stored predictions" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["mAP"] == pytest.approx(res["mAP"])
    assert cli.main(["evaluate", str(out), "--data-root", str(data), "--set", "merge=nms"]) == 0
    assert "predicted (inference settings differ" in capsys.readouterr().out
    # 3. --re-evaluate tests the finished run again
    assert cli.main([*train, "--re-evaluate"]) == 0
    assert json.loads((out / "result.json").read_text())["resumed"] is True
    # 4. --no-resume starts over: a fresh run, not a resumed one
    (out / "epoch_999.pt").touch()  # a stale kept epoch of the old run is deleted too
    assert cli.main([*train, "--no-resume"]) == 0
    again = json.loads((out / "result.json").read_text())
    assert again["resumed"] is False and not (out / "epoch_999.pt").exists() and again["mAP"] == res["mAP"]
    # 5. a truncated last.pt: one line naming it and saying how to start over
    data_bytes = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data_bytes[: len(data_bytes) // 3])
    capsys.readouterr()
    assert cli.main([*train[:-4], "--set", "epochs=2", "--set", "device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out / "last.pt") in err and "--no-resume" in err, err


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["train", "--preset", "gpu", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert cli.main(["train", "--preset", "smoke", "--set", "bogus=1", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit):
        cli.main([])


def test_module_entry_point_help():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "retina_unet", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "train" in r.stdout and "evaluate" in r.stdout


@pytest.mark.parametrize("model", ["retina_unet", "mask_rcnn", "detunet"])  # one per model family
def test_smoke_preset_with_real_model(tmp_path, model):
    from retina_unet import models

    assert model in models.MODEL_NAMES, f"{model} is not registered"
    out = tmp_path / "run"
    rc = cli.main(
        [
            "train",
            "--preset",
            "smoke",
            "--model",
            model,
            "--out",
            str(out),
            "--data-root",
            str(tmp_path / "data"),
            "--quiet",
            "--set",
            "device='cpu'",
        ]
    )
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["mAP"] is None or 0.0 <= res["mAP"] <= 1.0
    assert all(set(c) >= {"loss", "val_mAP"} for c in res["curve"])


def test_smoke_preset_3d_with_real_model(tmp_path):
    out = tmp_path / "run3d"
    rc = cli.main(
        [
            "train",
            "--preset",
            "smoke",
            "--dim",
            "3",
            "--model",
            "retina_unet",
            "--out",
            str(out),
            "--data-root",
            str(tmp_path / "data"),
            "--quiet",
            "--set",
            "device='cpu'",
        ]
    )
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["spatial_dims"] == 3 and res["test"]["n_images"] == 8
