"""``predict``: the round trip (written boxes re-evaluate to ``evaluate``'s mAP), box conventions,
input / checkpoint validation with nothing written on error, ``export-toy`` and ``overlays``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from retina_unet.cli import main
from retina_unet.evaluation import evaluate_detections
from retina_unet.predict import (
    CONVENTIONS,
    boxes_from_convention,
    convert_boxes,
    evaluate_detection_files,
    get_convention,
    read_detections,
    read_ground_truth,
    scan_inputs,
)
from retina_unet.predict.detections import f32_text

N_IMAGES = 8  # the smoke preset's whole test split (64 x 64 images)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A real Retina U-Net trained for 2 epochs x 2 steps (smoke preset), its data, and its toy test
    images exported with ground truth: (run dir, data root, input folder)."""
    from retina_unet.pipeline import train_and_evaluate
    from retina_unet.training import preset

    root = tmp_path_factory.mktemp("predict")
    cfg = preset("smoke", 2, device="cpu")
    train_and_evaluate(cfg, root / "run", data_root=root / "data", progress=False)
    inputs = root / "inputs"
    assert (
        main(
            [
                "export-toy",
                str(root / "run"),
                "--out",
                str(inputs),
                "--n",
                str(N_IMAGES),
                "--data-root",
                str(root / "data"),
            ]
        )
        == 0
    )
    return root / "run", root / "data", inputs


def _evaluate_cli(run: Path, data: Path, out: Path, *sets: str) -> dict:
    args = [
        "evaluate",
        "--checkpoint",
        str(run),
        "--n",
        str(N_IMAGES),
        "--data-root",
        str(data),
        "--out",
        str(out),
    ]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return json.loads(out.read_text())


def _same_metrics(a: dict, b: dict) -> None:
    for key in ("mAP", "patient_mAP", "n_images"):
        assert a[key] == b[key], key
    for key in ("ap", "patient_ap", "n_gt", "n_tp", "n_fp"):
        assert {str(k): v for k, v in a[key].items()} == {str(k): v for k, v in b[key].items()}, key


# --- the round trip -------------------------------------------------------------------------------
def test_predict_round_trip_matches_evaluate(smoke_run, tmp_path):
    """Boxes written by ``predict``, read back from CSV and JSON, re-evaluate exactly to ``evaluate``."""
    run, data, inputs = smoke_run
    out = tmp_path / "pred"
    assert (
        main(["predict", str(run), str(inputs), "--out", str(out), "--score-threshold", "0", "--quiet"]) == 0
    )
    gt = read_ground_truth(inputs, scan_inputs(inputs, 2, 1), 2)
    assert list(gt) == [f"test_{i:04d}" for i in range(N_IMAGES)]
    reference = _evaluate_cli(run, data, tmp_path / "eval.json")
    assert reference["n_images"] == N_IMAGES and reference["mAP"] is not None
    for name in ("detections.csv", "detections.json"):
        _same_metrics(evaluate_detection_files(out / name, gt, 2), reference)
    _same_metrics(json.loads((out / "evaluation.json").read_text()), reference)
    # Lax thresholds (every written box counts): AP depends on every score and box, not only on
    # the confident ones, so this checks the exactness of all written numbers.
    lax = _evaluate_cli(run, data, tmp_path / "lax.json", "iou_threshold=0.0", "score_threshold=0.0")
    assert sum(lax["n_tp"].values()) > 0 and sum(lax["n_fp"].values()) > 0
    for name in ("detections.csv", "detections.json"):
        _same_metrics(evaluate_detection_files(out / name, gt, 2, 0.0, 0.0), lax)
    # CSV and JSON hold the same numbers
    a, b = (
        read_detections(out / "detections.csv", list(gt)),
        read_detections(out / "detections.json", list(gt)),
    )
    assert all(torch.equal(a[k][f], b[k][f]) for k in gt for f in ("boxes", "scores", "labels"))


def test_score_threshold_filters_strictly_in_float32(smoke_run, tmp_path):
    run, _, inputs = smoke_run
    out = tmp_path / "pred"
    assert (
        main(["predict", str(run), str(inputs), "--out", str(out), "--score-threshold", "0.3", "--quiet"])
        == 0
    )
    with open(out / "detections.csv") as fh:
        scores = [float(r["score"]) for r in csv.DictReader(fh)]
    assert all(np.float32(s) > np.float32(0.3) for s in scores)
    doc = json.loads((out / "detections.json").read_text())
    assert [im["image"] for im in doc["images"]] == [f"test_{i:04d}" for i in range(N_IMAGES)]
    assert doc["settings"]["score_threshold"] == 0.3 and doc["convention"]["name"] == "xyxy"


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_written_converted_columns_invert_to_ours(smoke_run, tmp_path, name):
    run, _, inputs = smoke_run
    out = tmp_path / "pred"
    assert (
        main(
            ["predict", str(run), str(inputs), "--out", str(out), "--convention", name, "--quiet", "--no-tta"]
        )
        == 0
    )
    with open(out / "detections.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    ours = torch.tensor(
        [[float(r[c]) for c in ("lo_0", "lo_1", "hi_0", "hi_1")] for r in rows], dtype=torch.float64
    )
    if name == "ours":
        assert not any(k.startswith("ours_") for k in rows[0])
        return
    cols = [f"{name}_{c}" for c in CONVENTIONS[name].columns[2]]
    conv = torch.tensor([[float(r[c]) for c in cols] for r in rows], dtype=torch.float64)
    torch.testing.assert_close(boxes_from_convention(conv, name), ours, rtol=0, atol=1e-5)


def test_predict_overlays_and_run_overlays(smoke_run, tmp_path):
    from PIL import Image

    from retina_unet.visualize import figure_size_px

    run, data, inputs = smoke_run
    out = tmp_path / "pred"
    assert (
        main(["predict", str(run), str(inputs), "--out", str(out), "--overlays", "--quiet", "--no-tta"]) == 0
    )
    pngs = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert pngs == sorted([f"test_{i:04d}.png" for i in range(N_IMAGES)] + ["best_worst.png"])
    assert Image.open(out / "overlays" / "test_0000.png").size == figure_size_px(1, 1, title=False)
    assert Image.open(out / "overlays" / "best_worst.png").size == figure_size_px(2, 4, title=True)
    grid = tmp_path / "grid"
    assert (
        main(
            [
                "overlays",
                str(run),
                "--out",
                str(grid),
                "--n",
                "2",
                "--images",
                "6",
                "--data-root",
                str(data),
                "--quiet",
            ]
        )
        == 0
    )
    assert Image.open(grid / "best_worst.png").size == figure_size_px(2, 2, title=True)
    with open(grid / "cases.csv") as fh:
        cases = list(csv.DictReader(fh))
    assert len(cases) == 6 and [float(c["score"]) for c in cases] == sorted(
        (float(c["score"]) for c in cases), reverse=True
    )
    assert len(list((grid / "cases").glob("*.png"))) == 4
    assert json.loads((grid / "evaluation.json").read_text())["n_images"] == 6


# --- validation: clear errors, nothing written ----------------------------------------------------
def _fails(capsys, args: list[str], *needles: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, (n, err)
    return err


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize(
    "array, needles",
    [
        (np.zeros((64, 64), bool), ["bad.npy", "dtype bool", "float or integer"]),
        (np.zeros((64, 64), np.complex64), ["bad.npy", "complex64", "float or integer"]),
        (np.full((64, 64), np.nan, np.float32), ["bad.npy", "NaN", "finite"]),
        (np.array([[0.0, np.inf]], np.float64), ["bad.npy", "inf", "finite"]),
        (np.zeros((24, 64, 64), np.float32), ["bad.npy", "24 channels", "in_channels=1", "3D volume"]),
        (np.zeros((1, 2, 64, 64), np.float32), ["bad.npy", "4 dims", "(H, W) or (C, H, W)"]),
        (np.zeros((64,), np.float32), ["bad.npy", "1 dims"]),
        (np.zeros((0, 64), np.float32), ["bad.npy", "empty spatial axis"]),
    ],
    ids=["bool", "complex", "nan", "inf", "volume-for-2d", "5d", "1d", "empty"],
)
def test_bad_input_arrays_are_rejected_before_running(smoke_run, tmp_path, capsys, array, needles):
    run, _, inputs = smoke_run
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "good.npy", np.zeros((64, 64), np.float32))
    np.save(folder / "bad.npy", array)
    out = tmp_path / "out"
    _fails(
        capsys,
        ["predict", str(run), str(folder), "--out", str(out), "--quiet"],
        "INPUT_DIR",
        "1 of 2",
        *needles,
    )
    _nothing_written(out)


def test_object_arrays_and_non_npy_files_are_rejected(smoke_run, tmp_path, capsys):
    run, _, _ = smoke_run
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "junk.npy").write_bytes(b"not numpy")
    out = tmp_path / "out"
    _fails(
        capsys,
        ["predict", str(run), str(folder), "--out", str(out)],
        "obj.npy: object arrays are rejected",
        "junk.npy: not a readable .npy file",
        "2 of 2",
    )
    _nothing_written(out)


def test_integer_and_float64_inputs_are_accepted(smoke_run, tmp_path):
    run, _, _ = smoke_run
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    # integer dtypes on the training intensity scale (0..1.2; 0-255 needs --intensity-scale, below)
    np.save(folder / "a_uint8.npy", rng.integers(0, 2, (64, 64), dtype=np.uint8))
    np.save(folder / "b_float64.npy", rng.random((1, 48, 40)))  # (C, H, W), another size
    np.save(folder / "c_int32.npy", rng.integers(-1, 2, (64, 64), dtype=np.int32))
    items = scan_inputs(folder, 2, 1)
    assert [(it.stem, it.spatial) for it in items] == [
        ("a_uint8", (64, 64)),
        ("b_float64", (48, 40)),
        ("c_int32", (64, 64)),
    ]
    assert all(it.load().dtype == np.float32 and it.load().ndim == 3 for it in items)
    out = tmp_path / "out"
    assert (
        main(["predict", str(run), str(folder), "--out", str(out), "--quiet", "--score-threshold", "0"]) == 0
    )
    doc = json.loads((out / "detections.json").read_text())
    assert [im["image"] for im in doc["images"]] == ["a_uint8", "b_float64", "c_int32"]
    assert not (out / "evaluation.json").exists()  # no ground truth there


def test_bad_checkpoints_and_arguments(smoke_run, tmp_path, capsys):
    run, _, inputs = smoke_run
    out = tmp_path / "out"
    base = [str(inputs), "--out", str(out), "--quiet"]
    _fails(
        capsys,
        ["predict", str(run), *base, "--convention", "yxyx"],
        "--convention",
        "'yxyx'",
        "xyxy",
        "cxcywh",
    )
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    _fails(capsys, ["predict", str(text), *base], "notes.pt cannot be read", "not a checkpoint")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    _fails(capsys, ["predict", str(plain), *base], "plain.pt is not a checkpoint", "'config', 'model'")
    ck = torch.load(sorted(run.glob("epoch_*.pt"))[0], weights_only=False)
    ck["config"]["model"] = "yolo"
    torch.save(ck, tmp_path / "yolo.pt")
    _fails(capsys, ["predict", str(tmp_path / "yolo.pt"), *base], "unknown model 'yolo'", "retina_unet")
    _fails(capsys, ["predict", str(tmp_path), *base], "not a run directory", "last.pt")
    _fails(capsys, ["predict", str(tmp_path / "missing.pt"), *base], "no file at")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, ["predict", str(run), str(empty), "--out", str(out)], "holds no .npy files")
    _fails(capsys, ["predict", str(run), *base, "--score-threshold", "nan"], "--score-threshold")
    _nothing_written(out)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    _fails(capsys, ["predict", str(run), *base], "not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "x"
    assert main(["predict", str(run), *base, "--overwrite", "--no-tta"]) == 0
    assert (out / "detections.csv").is_file() and not (out / "keep.txt").exists()


def test_ground_truth_must_match_the_inputs(smoke_run, tmp_path, capsys):
    run, _, inputs = smoke_run
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(inputs.glob("*.npy"))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "ground_truth.json").write_text((inputs / "ground_truth.json").read_text())
    out = tmp_path / "out"
    _fails(
        capsys,
        ["predict", str(run), str(folder), "--out", str(out)],
        "ground_truth.json",
        "entries without a file",
    )
    _nothing_written(out)


# --- conventions ----------------------------------------------------------------------------------
coords = st.floats(-500, 500, allow_nan=False, width=32)


@st.composite
def our_boxes(draw, dims=(2, 3)):
    d = draw(st.sampled_from(dims))
    n = draw(st.integers(0, 5))
    lo = draw(st.lists(st.lists(coords, min_size=d, max_size=d), min_size=n, max_size=n))
    size = draw(
        st.lists(st.lists(st.floats(0, 100, width=32), min_size=d, max_size=d), min_size=n, max_size=n)
    )
    lo, size = (torch.from_numpy(np.array(v, dtype=np.float64).reshape(n, d)) for v in (lo, size))
    return torch.cat([lo, lo + size], 1)


@given(our_boxes(), st.sampled_from(sorted(CONVENTIONS)))
def test_conventions_invert(boxes, name):
    d = boxes.shape[1] // 2
    if d not in CONVENTIONS[name].columns:
        with pytest.raises(ValueError, match="no 3D form"):
            convert_boxes(boxes, name)
        return
    out = convert_boxes(boxes, name)
    assert out.shape == boxes.shape and out.dtype == torch.float64
    torch.testing.assert_close(boxes_from_convention(out, name), boxes, rtol=0, atol=1e-9)


@given(our_boxes(dims=(2,)))
def test_2d_conventions_match_torchvision(boxes):
    import torchvision.ops as tv

    from retina_unet.ops import to_torchvision

    xyxy = to_torchvision(boxes)
    assert torch.equal(convert_boxes(boxes, "xyxy"), xyxy) and torch.equal(
        convert_boxes(boxes, "torchvision"), xyxy
    )
    torch.testing.assert_close(convert_boxes(boxes, "xywh"), tv.box_convert(xyxy, "xyxy", "xywh"))
    torch.testing.assert_close(convert_boxes(boxes, "cxcywh"), tv.box_convert(xyxy, "xyxy", "cxcywh"))
    assert torch.equal(convert_boxes(boxes, "monai"), boxes)


def test_3d_convention_axes():
    box = torch.tensor([[1.0, 2, 3, 11, 22, 33]])  # axis 0 [1, 11), axis 1 [2, 22), axis 2 [3, 33)
    assert convert_boxes(box, "xyxy").tolist() == [[3, 2, 1, 33, 22, 11]]  # x = last axis, z = axis 0
    assert convert_boxes(box, "xywh").tolist() == [[3, 2, 1, 30, 20, 10]]
    assert convert_boxes(box, "cxcywh").tolist() == [[18, 12, 6, 30, 20, 10]]
    assert convert_boxes(box, "mdt").tolist() == [[1, 2, 11, 22, 3, 33]]
    assert convert_boxes(box, "monai").tolist() == box.tolist()
    with pytest.raises(ValueError, match="2D boxes only"):
        get_convention("torchvision", 3)
    with pytest.raises(ValueError, match="unknown box convention"):
        get_convention("xxyy")
    with pytest.raises(ValueError, match=r"\(N, 4\) or \(N, 6\)"):
        convert_boxes(torch.zeros(3, 5), "xyxy")


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_f32_text_round_trips(x):
    assert np.float32(float(f32_text(x))) == np.float32(x)


def test_evaluate_detection_files_on_a_hand_case(tmp_path):
    """A written file with one hit and one false positive evaluates as in memory."""
    from retina_unet.predict.conventions import CONVENTIONS as C
    from retina_unet.predict.detections import csv_text, detection_records

    pred = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
        "scores": torch.tensor([0.9, 0.6]),
        "labels": torch.tensor([1, 1]),
    }
    gt = {
        "a": {"boxes": np.array([[1.0, 1, 10, 10]], np.float32), "labels": np.array([1])},
        "b": {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)},
    }
    recs = detection_records("a", pred, C["xywh"], 0.1)
    (tmp_path / "d.csv").write_text(csv_text(recs, 2, C["xywh"]))
    res = evaluate_detection_files(tmp_path / "d.csv", gt, 2)
    ref = evaluate_detections(
        [
            pred,
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
            },
        ],
        list(gt.values()),
        2,
    )
    assert res["mAP"] == ref["mAP"] and res["n_fp"] == ref["n_fp"] == {1: 1, 2: 0}


def test_single_checkpoint_file_round_trip(smoke_run, tmp_path):
    """One epoch file (no ensemble) on the toy images: the written boxes evaluate like ``evaluate``."""
    run, data, inputs = smoke_run
    epoch = sorted(run.glob("epoch_*.pt"))[-1]
    out = tmp_path / "pred"
    assert (
        main(["predict", str(epoch), str(inputs), "--out", str(out), "--quiet", "--score-threshold", "0"])
        == 0
    )
    doc = json.loads((out / "detections.json").read_text())
    assert doc["checkpoint_files"] == [str(epoch)] and doc["settings"]["n_members"] == 2  # 1 model x 2 views
    reference = _evaluate_cli(epoch, data, tmp_path / "eval.json", "iou_threshold=0.0", "score_threshold=0.0")
    gt = read_ground_truth(inputs, scan_inputs(inputs, 2, 1), 2)
    _same_metrics(evaluate_detection_files(out / "detections.csv", gt, 2, 0.0, 0.0), reference)


# --- the intensity contract -------------------------------------------------------------------------


def test_checkpoints_record_the_training_intensity_range(smoke_run):
    from retina_unet.rundir import load_run_models

    run, _, _ = smoke_run
    ck = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert ck["intensity_range"] == [0.0, 1.2]  # toy images: background [0, 1) + contrast 0.2
    assert load_run_models(run).intensity_range == (0.0, 1.2)


def test_8bit_images_are_refused_in_one_line_and_scaled_on_request(smoke_run, tmp_path, capsys):
    """The same pixels as uint8 0-255 and as float: refused without a scale, identical detections with it."""
    import shutil

    run, _, inputs = smoke_run
    as_uint8, as_float = tmp_path / "u8", tmp_path / "f32"
    as_uint8.mkdir()
    as_float.mkdir()
    for f in sorted(inputs.glob("*.npy")):
        u = np.round(np.load(f) * 200).astype(np.uint8)  # 0..240
        np.save(as_uint8 / f.name, u)
        np.save(as_float / f.name, u.astype(np.float32) * np.float32(0.005))
    shutil.copy(inputs / "ground_truth.json", as_uint8 / "ground_truth.json")
    out = tmp_path / "out"
    err = _fails(capsys, ["predict", str(run), str(as_uint8), "--out", str(out), "--quiet"],
                 "far outside the range the model was trained on, 0..1.2", "--intensity-scale 0.00392157 (= 1/255)")
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    _nothing_written(out)
    _fails(capsys, ["predict", str(run), str(as_uint8), "--out", str(out), "--intensity-scale", "0"],
           "--intensity-scale: expected a finite number > 0")
    scaled, ref = tmp_path / "scaled", tmp_path / "ref"
    assert main(["predict", str(run), str(as_uint8), "--out", str(scaled), "--quiet", "--intensity-scale",
                 "0.005"]) == 0
    assert main(["predict", str(run), str(as_float), "--out", str(ref), "--quiet"]) == 0
    assert (scaled / "detections.csv").read_text() == (ref / "detections.csv").read_text()
    settings = json.loads((scaled / "detections.json").read_text())
    assert "0.005" in json.dumps(settings) and (scaled / "evaluation.json").exists()


def test_check_intensities_tolerates_one_range_width(tmp_path):
    from retina_unet.predict.inputs import check_intensities

    folder = tmp_path / "in"
    folder.mkdir()
    for name, lo, hi in (("ok", -1.1, 2.3), ("low", -1.3, 1.0), ("high", 0.0, 2.5)):
        np.save(folder / f"{name}.npy", np.array([[lo, hi]], np.float32))
    items = {it.stem: it for it in scan_inputs(folder, 2, 1)}
    check_intensities([items["ok"]], (0.0, 1.2))
    check_intensities([items["ok"], items["high"]], None)  # unknown range: nothing to check
    for bad in ("low", "high"):
        with pytest.raises(ValueError, match=f"e.g. {bad}.npy"):
            check_intensities([items["ok"], items[bad]], (0.0, 1.2))


def test_ctrl_c_in_predict_is_one_line_and_writes_nothing(smoke_run, tmp_path, monkeypatch, capsys):
    from retina_unet.predict import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_predictor", interrupted)
    run, _, inputs = smoke_run
    out = tmp_path / "out"
    assert main(["predict", str(run), str(inputs), "--out", str(out), "--quiet"]) == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"nothing was written to {out}" in err[0] and "rerun the same command" in err[0]
    _nothing_written(out)


def test_test_split_readers_ignore_a_damaged_train_split(smoke_run, tmp_path, capsys):
    """evaluate / export-toy read only the test split; a truncated train file says to regenerate."""
    import shutil

    from retina_unet.data import dataset_key, ensure_dataset
    from retina_unet.training import preset

    run, data, _ = smoke_run
    damaged = tmp_path / "data"
    shutil.copytree(data, damaged)
    cfg = preset("smoke", 2, device="cpu")
    images = damaged / dataset_key(cfg) / "train" / "images.npy"
    images.write_bytes(images.read_bytes()[:1000])
    ev = tmp_path / "ev.json"
    # --no-reuse: predict again (the run's stored test predictions would answer without the dataset)
    assert main(["evaluate", "--checkpoint", str(run), "--n", "2", "--data-root", str(damaged), "--out", str(ev),
                 "--no-reuse"]) == 0
    assert json.loads(ev.read_text())["n_images"] == 2
    assert json.loads(ev.read_text())["meta"]["predictions"] == "predicted"
    assert main(["export-toy", str(run), "--out", str(tmp_path / "x"), "--n", "2", "--data-root", str(damaged)]) == 0
    assert len(list((tmp_path / "x").glob("*.npy"))) == 2
    capsys.readouterr()
    with pytest.raises(ValueError) as e:
        ensure_dataset(cfg, damaged)
    msg = str(e.value)
    assert "truncated" in msg and "regenerate" in msg and f"Delete {images.parent.parent}" in msg
    assert "\n" not in msg
