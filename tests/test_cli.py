"""CLI smoke tests (tiny): train then evaluate, overrides, errors, the real models when present."""

from __future__ import annotations

import json

import pytest
import torch

from retina_unet import cli
from tests.test_training import TinySegDetector


@pytest.fixture
def tiny_models(monkeypatch):
    import retina_unet.training.run as run

    def build(cfg, num_classes=2, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return TinySegDetector(cfg.spatial_dims)

    monkeypatch.setattr(run, "build_from_config", build)
    monkeypatch.setattr("retina_unet.training.build_from_config", build)


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
