"""One way through the code (#11) and the CLI's first-hour edges (#13): the one override parser, field
roles, run identity, the one run-folder loader (safe loading, one-line errors), `train` on existing
folders and finished runs, `resume=False`, help texts."""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from retina_unet import cli
from retina_unet.training import TrainConfig, fields_with_role, identity_dict, parse_overrides
from retina_unet.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


# --- the one override parser -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, value",
    [("tta=false", False), ("tta=FALSE", False), ("tta=True", True), ("tta=1", True), ("tta=0", False)],
)
def test_bool_overrides_accept_any_case_and_0_1(text, value):
    assert parse_overrides([text]) == {"tta": value}


def test_overrides_are_read_as_the_field_type():
    got = parse_overrides(["lr=3e-4", "epochs=3", "patch_size=(96,96)", "val_subset=None", "merge=nms",
                           'task_overrides={"size": 96}', "grad_clip=1", "device='cpu'", "test_subset=null"])
    assert got == {"lr": 3e-4, "epochs": 3, "patch_size": (96, 96), "val_subset": None, "merge": "nms",
                   "task_overrides": {"size": 96}, "grad_clip": 1.0, "device": "cpu", "test_subset": None}
    assert type(got["lr"]) is float and type(got["epochs"]) is int and type(got["grad_clip"]) is float
    assert parse_overrides(["patch_size=64,64"]) == {"patch_size": (64, 64)}
    assert TrainConfig(**{**parse_overrides(["tta=false"])}).tta is False


@pytest.mark.parametrize(
    "text, words",
    [
        ("tta=maybe", ("tta", "bool")),
        ("lr=abc", ("lr", "float")),
        ("epochs=2.5", ("epochs", "int")),
        ("patch_size=(a,b)", ("patch_size", "tuple")),
        ("task_overrides=[1]", ("task_overrides", "dict")),
        ("lrr=1e-3", ("lrr", "did you mean lr")),
        ("lr", ("KEY=VALUE",)),
    ],
)
def test_bad_overrides_are_one_line_errors(text, words):
    with pytest.raises(ValueError) as err:
        parse_overrides([text])
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize("bad", ["tta=maybe", "lr=abc", "nope=1"])
def test_train_and_evaluate_set_errors_are_one_line(tmp_path, capsys, bad):
    assert cli.main(["train", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --set") and "\n" not in err
    assert not (tmp_path / "r").exists()
    assert cli.main(["evaluate", str(tmp_path / "r"), "--set", bad]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --set")


def test_study_run_set_uses_the_same_parser(tmp_path, capsys):
    from retina_unet.study.cli import main as study_main

    out = tmp_path / "study"
    assert study_main(["run", "--preset", "smoke", "--out", str(out), "--dry-run", "--set", "tta=maybe"]) != 0
    assert "expected a bool" in capsys.readouterr().err
    assert study_main(["run", "--preset", "smoke", "--out", str(out), "--dry-run", "--set", "tta=FALSE"]) == 0
    from retina_unet.study.cli import _definition, _fill

    parser = argparse.ArgumentParser()
    _fill(parser)
    args = parser.parse_args(["run", "--preset", "smoke", "--out", str(out), "--set", "tta=FALSE", "lr=1e-3"])
    assert dict(_definition(args).overrides)["tta"] is False
    assert dict(_definition(args).overrides)["lr"] == 1e-3


# --- field roles and run identity -------------------------------------------------------------------
def test_field_roles():
    assert set(fields_with_role(TrainConfig, "inference")) == {
        "tta", "tta_views", "ensemble_top_k", "merge", "wbc_iou", "nms_iou"}
    assert set(fields_with_role(TrainConfig(), "not_identity")) == {"device", "num_threads"}
    may = set(fields_with_role(TrainConfig, "resume_may_change"))
    assert set(fields_with_role(TrainConfig, "inference")) <= may and "lr" not in may
    with pytest.raises(ValueError, match="unknown role"):
        fields_with_role(TrainConfig, "inference_only")


def test_inference_reuse_reads_the_inference_role():
    from retina_unet.rundir import inference_settings, why_not_reusable

    cfg = TrainConfig()
    stored = {"split": "test", "inference": inference_settings(cfg), "members": [3, 2], "split_size": 10,
              "n_images": 10}
    assert why_not_reusable(stored, cfg, [3, 2], "test", None) is None
    for field in fields_with_role(cfg, "inference"):
        value = getattr(cfg, field)
        other = {"merge": "nms"}.get(field, (not value) if isinstance(value, bool) else value * 2)
        assert "inference settings differ" in why_not_reusable(stored, cfg.replace(**{field: other}), [3, 2],
                                                               "test", None)
    # an evaluation-only threshold does not change the predictions: they stay reusable
    assert why_not_reusable(stored, cfg.replace(score_threshold=0.2, device="cpu"), [3, 2], "test", 5) is None
    assert "kept epochs differ" in why_not_reusable(stored, cfg, [3], "test", None)


def test_a_new_field_with_its_default_keeps_old_identities():
    """A field added later (metadata "added") is out of the identity while at its default, so runs
    recorded before it existed keep their identity; another value is a new identity."""
    from retina_unet.study._hash import stable_hash
    from retina_unet.training.config import _role

    base = [(f.name, f.type, f) for f in dataclasses.fields(TrainConfig)]
    Grown = dataclasses.make_dataclass(
        "Grown", [*base, ("warmup_steps", int, _role(0, added="2026-11-30"))], frozen=True
    )
    old = TrainConfig().to_dict()  # as recorded before the field existed
    new = dataclasses.asdict(Grown())
    new["patch_size"] = old["patch_size"]
    assert "warmup_steps" in new and "warmup_steps" not in old
    assert stable_hash(identity_dict(new, Grown)) == stable_hash(identity_dict(old, Grown))
    changed = {**new, "warmup_steps": 100}
    assert stable_hash(identity_dict(changed, Grown)) != stable_hash(identity_dict(old, Grown))
    # not_identity fields never change the identity; other fields always do
    assert identity_dict({**old, "device": "cuda", "num_threads": 7}) == identity_dict(old)
    assert identity_dict({**old, "lr": 1.0}) != identity_dict(old)


def test_committed_study_run_ids_still_resolve():
    """The run ids of the committed quick study (reports/quick/results.csv) are what the engine
    computes now: the restructure orphans no finished run."""
    from retina_unet.study.definition import RunSpec, preset
    from retina_unet.study.engine import TrainingEngine
    from retina_unet.study.execute import plan

    rows = list(csv.DictReader(open(REPO / "reports" / "quick" / "results.csv")))
    assert rows
    overrides = preset("quick").overrides  # the committed report is a run of today's quick preset
    for r in rows:
        spec = RunSpec(r["task"], int(r["dim"]), r["model"], int(r["n_train"]), int(r["seed"]), "cpu", overrides)
        got, _ = plan(TrainingEngine(), spec)
        assert r["run_id"] == f"{spec.label}-{got}"


# --- the one run-folder loader -------------------------------------------------------------------------
class Unsafe:
    """Any class: loading it would run arbitrary code paths (pickle), so safe loading refuses it."""


def test_checkpoints_load_safely(tmp_path):
    save_checkpoint({"config": {}, "thing": Unsafe()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    save_checkpoint({"a": torch.ones(2), "v": torch.__version__, "x": [1.5, None, "s"]}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["v"] == torch.__version__


def _fake_checkpoint(tmp_path, **drop) -> Path:
    ck = {"config": TrainConfig(model="retina_net").to_dict(), "model": {"w": torch.zeros(1)}, "num_classes": 2}
    for k in drop:
        ck.pop(k)
    save_checkpoint(ck, tmp_path / "ck.pt")
    return tmp_path / "ck.pt"


def test_num_classes_comes_from_the_checkpoint(tmp_path):
    from retina_unet.rundir import read_checkpoint

    ck, cfg = read_checkpoint(_fake_checkpoint(tmp_path))
    assert ck["num_classes"] == 2 and cfg.model == "retina_net"
    with pytest.raises(CheckpointError, match="num_classes"):
        read_checkpoint(_fake_checkpoint(tmp_path, num_classes=None))


@pytest.mark.parametrize("kind", ["text", "truncated", "list"])
def test_evaluate_refuses_a_non_checkpoint_in_one_line(tmp_path, capsys, kind):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    else:
        good = _fake_checkpoint(tmp_path)
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    assert cli.main(["evaluate", str(path), "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint:") and str(path) in err and "\n" not in err, err
    assert not (tmp_path / "data").exists()  # refused before any dataset work


def test_train_refuses_an_out_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "images"
    out.mkdir()
    (out / "case_000.png").write_bytes(b"png")
    args = ["train", "--preset", "smoke", "--out", str(out), "--data-root", str(tmp_path / "data"), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "case_000.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["case_000.png"] and not (tmp_path / "data").exists()
    from retina_unet.rundir import RunDir

    (tmp_path / "run").mkdir()
    for name in ("last.pt", "epoch_003.pt", "history.json", ".last.pt.abc.tmp", "tensorboard"):
        (tmp_path / "run" / name).touch()
    RunDir(tmp_path / "run").check_train_target()  # a run folder (or a new one) is fine
    RunDir(tmp_path / "new").check_train_target()


# --- help texts --------------------------------------------------------------------------------------
def _all_parsers(parser: argparse.ArgumentParser, name="retina-unet"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{name} {sub_name}")


def test_every_cli_option_has_help_text():
    missing = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, parser in _all_parsers(cli.build_parser())
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help
    ]
    assert missing == []


def test_train_help_lists_the_model_names(capsys):
    from retina_unet.models import MODEL_NAMES
    from retina_unet.training import PRESETS

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(m in text for m in MODEL_NAMES) and all(p in text for p in PRESETS)


# --- the one predict loop ------------------------------------------------------------------------------
def test_predict_images_batches_equal_shapes_in_order_and_keeps_seg_only_when_asked():
    import numpy as np

    from retina_unet.inference import predict_images, shape_batches

    assert shape_batches([(1, 4, 4)] * 5, 2) == [[0, 1], [2, 3], [4]]
    assert shape_batches([(1, 4, 4), (1, 4, 4), (1, 6, 4), (1, 4, 4)], 8) == [[0, 1], [2], [3]]
    images = [np.full((1, 4, 4), i, np.float32) for i in range(3)] + [np.zeros((1, 6, 4), np.float32)]
    calls, seen = [], []

    def predict_fn(batch):
        calls.append(tuple(batch.shape))
        return [{"boxes": torch.zeros(0, 4), "scores": batch[i].mean().reshape(1), "labels": torch.ones(1),
                 "seg": batch[i]} for i in range(batch.shape[0])]

    out = predict_images(predict_fn, images, 2, "cpu", on_batch=lambda ids, preds: seen.append(
        (ids, all("seg" in p for p in preds))))
    assert calls == [(2, 1, 4, 4), (1, 1, 4, 4), (1, 1, 6, 4)]
    assert [float(p["scores"]) for p in out] == [0.0, 1.0, 2.0, 0.0] and all("seg" not in p for p in out)
    assert seen == [([0, 1], True), ([2], True), ([3], True)]
    assert all("seg" in p for p in predict_images(predict_fn, images, 2, "cpu", keep_seg=True))
