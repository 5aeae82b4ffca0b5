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
    assert ("- 2 result file(s) from older training configs (the presets changed since) left out; rerun `study run` "
            "to redo them") in text.splitlines()


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


# --- the figures' helpers and contents (hand cases; the figures are captured before they are closed) ---


def test_window_centres_a_square_crop_on_the_object_and_stays_inside_the_image():
    """(top, left, size): size = max(96, 3 * the box's longer side), at most the image's shorter side;
    the crop is centred on the box and clipped into the image."""
    import numpy as np

    from retina_unet.study.report.figures import _window

    img = np.zeros((320, 320))
    # small box (10 x 20): size 96; centre (105, 160) -> top 105 - 48 = 57, left 160 - 48 = 112
    assert _window(img, np.array([100, 150, 110, 170])) == (57, 112, 96)
    # 40 x 20 box: size 3 * 40 = 120; centre (120, 110) -> (60, 50)
    assert _window(img, np.array([100, 100, 140, 120])) == (60, 50, 120)
    # 20 x 40 box: size 120; centre (110, 120) -> (50, 60)
    assert _window(img, np.array([100, 100, 120, 140])) == (50, 60, 120)
    # near the top-left corner: the centre minus half the size is negative -> clipped to 0
    assert _window(img, np.array([2, 4, 12, 14])) == (0, 0, 96)
    # near the bottom-right corner: clipped to 320 - 96 = 224
    assert _window(img, np.array([300, 310, 310, 318])) == (224, 224, 96)
    # min_size is honoured: 10 x 10 box with min_size 50 -> size 50, centre (55, 65) -> (30, 40)
    assert _window(img, np.array([50, 60, 60, 70]), min_size=50) == (30, 40, 50)
    # a large box in a non-square image: the size is capped by the shorter side (h = 100 here, w = 100 below)
    assert _window(np.zeros((100, 200)), np.array([10, 10, 60, 90])) == (0, 0, 100)
    assert _window(np.zeros((200, 100)), np.array([10, 10, 90, 60])) == (0, 0, 100)
    # odd centre: (y0 + y1) / 2 - size / 2 = 50.5 - 48 = 2.5 -> int() -> 2
    assert _window(img, np.array([50, 50, 51, 51])) == (2, 2, 96)


def test_draw_box_draws_an_unfilled_clipped_rectangle_shifted_by_the_crop():
    """A (y0, x0, y1, x1) box drawn in crop coordinates: corner (x0 - left - 0.5, y0 - top - 0.5) (pixel
    edges), width x1 - x0, height y1 - y0, outline only, clipped to the axes; default style solid, 1.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retina_unet.study.report.figures import _draw_box

    fig, ax = plt.subplots()
    try:
        _draw_box(ax, (10, 20, 30, 50), "red", offset=(5, 7), ls="--", lw=1.0)
        _draw_box(ax, (10, 20, 30, 50), "blue")
        a, b = ax.patches
        assert a.get_xy() == (20 - 7 - 0.5, 10 - 5 - 0.5) and (a.get_width(), a.get_height()) == (30, 20)
        assert a.get_fill() is False and a.get_clip_on() is True
        assert a.get_edgecolor() == (1.0, 0.0, 0.0, 1.0) and a.get_linestyle() == "--" and a.get_linewidth() == 1.0
        assert b.get_xy() == (19.5, 9.5) and (b.get_width(), b.get_height()) == (30, 20)
        assert b.get_edgecolor() == (0.0, 0.0, 1.0, 1.0) and b.get_linestyle() == "-" and b.get_linewidth() == 1.5
        assert b.get_fill() is False and b.get_clip_on() is True
    finally:
        plt.close(fig)


def test_save_palette_png_writes_a_256_colour_png_at_the_given_dpi(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from retina_unet.study.report.figures import _save_palette_png

    fig, ax = plt.subplots(figsize=(2.0, 1.5))
    try:
        ax.imshow([[0.0, 1.0], [0.5, 0.25]], cmap="gray")
        path = _save_palette_png(fig, tmp_path / "x.png", dpi=40)
    finally:
        plt.close(fig)
    assert path == tmp_path / "x.png"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "P" and im.size == (80, 60)  # 2.0 x 1.5 in at 40 dpi
        assert "Software" not in im.info


@pytest.fixture
def closed_figures(monkeypatch):
    """The figures the code under test closes (``plt.close(fig)``), kept open for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_close, figs = plt.close, []
    monkeypatch.setattr(plt, "close", figs.append)
    yield figs
    monkeypatch.undo()
    for f in figs:
        if f is not None:
            real_close(f)


def _rgb(colour):
    from matplotlib.colors import to_rgba

    return tuple(round(v, 6) for v in to_rgba(colour)[:3])


def test_paired_figure_draws_each_comparison_per_panel(tmp_path, closed_figures):
    """Two panels (donuts_shape before circles_scale), three comparisons side by side on the log axis
    (x shifted by 1 + 0.06 * (i - 1): 0.94, 1.0, 1.06); mean with the t-interval as bars (one seed: no
    interval, a zero-length bar at the mean), the seeds as dots, a line at 0; y shared; the legend on
    the last panel. Intervals: diffs (0.1, 0.2, 0.3): mean 0.2, sd 0.1, half = t(0.975, 2) * 0.1 / sqrt(3)
    = 4.302653 * 0.057735 = 0.248414; diffs (0, 0, 0.3): mean 0.1, sd sqrt(0.03), half = 4.302653 * 0.1
    = 0.430265; diffs (0.2, 0.4): mean 0.3, sd sqrt(0.02), half = t(0.975, 1) * 0.1 = 12.706205 * 0.1."""
    import numpy as np
    from PIL import Image

    from retina_unet.study.report.figures import plot_paired

    def A(x):
        return pytest.approx(np.array(x, dtype=float), abs=1e-5)

    rows = [("donuts_shape", 2, 20, s, d, "A - X") for s, d in enumerate([0.1, 0.2, 0.3])]
    rows += [("donuts_shape", 2, 100, s, d, "A - X") for s, d in enumerate([0.0, 0.0, 0.3])]
    rows += [("donuts_shape", 2, 20, 0, -0.5, "A - Y")]
    rows += [("circles_scale", 2, 20, s, d, "A - Y") for s, d in enumerate([0.2, 0.4])]  # no A - X here
    rows += [("circles_scale", 2, 20, s, d, "A - Z") for s, d in enumerate([-0.1, -0.3])]
    per_seed = pd.DataFrame(rows, columns=["task", "dim", "n_train", "seed", "diff", "comparison"])
    path = tmp_path / "p.png"
    assert plot_paired(per_seed, path) == path
    with Image.open(path) as im:
        assert im.format == "PNG" and "Software" not in im.info
    fig, = closed_figures
    assert fig._suptitle.get_text() == "paired by seed: mean, 95% t-interval, dots = seeds"
    donuts, circles = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["donuts_shape 2D", "circles_scale 2D"]
    assert donuts.get_ylabel() == "paired mAP difference"
    assert donuts.get_shared_y_axes().joined(donuts, circles)
    for ax, sizes in ((donuts, [20, 100]), (circles, [20])):
        assert ax.get_xlabel() == "training images (n_train, log scale)" and ax.get_xscale() == "log"
        assert list(ax.get_xticks()) == sizes and [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in sizes]
        assert any(list(ln.get_ydata()) == [0.0, 0.0] for ln in ax.lines)  # the zero line

    def bars(ax):
        out = {}
        for c in ax.containers:
            data, _caps, (segments, *_) = c.lines
            out[c.get_label()] = (np.asarray(data.get_xydata()), np.asarray(segments.get_segments()),
                                  _rgb(data.get_color()))
        return out

    def dots(ax):
        return [(np.asarray(col.get_offsets()), _rgb(col.get_facecolor()[0])) for col in ax.collections
                if type(col).__name__ == "PathCollection"]

    h1, h2, h3 = 4.302653 * 0.1 / math.sqrt(3), 4.302653 * 0.1, 12.706205 * 0.1
    b = bars(donuts)
    assert list(b) == ["A - X", "A - Y"]
    (xy, seg, cx), (xy_y, seg_y, cy) = b["A - X"], b["A - Y"]
    assert xy == A([[18.8, 0.2], [94.0, 0.1]])
    assert seg == A([[[18.8, 0.2 - h1], [18.8, 0.2 + h1]], [[94.0, 0.1 - h2], [94.0, 0.1 + h2]]])
    assert xy_y == A([[20.0, -0.5]]) and seg_y == A([[[20.0, -0.5], [20.0, -0.5]]])
    d = dots(donuts)
    assert len(d) == 2 and d[0][0] == A([[18.8, 0.1], [18.8, 0.2], [18.8, 0.3], [94.0, 0.0], [94.0, 0.0], [94.0, 0.3]])
    assert d[1][0] == A([[20.0, -0.5]])
    assert [c for _, c in d] == [cx, cy] and cx != cy
    b = bars(circles)
    assert list(b) == ["A - Y", "A - Z"]
    assert b["A - Y"][0] == A([[20.0, 0.3]])
    assert b["A - Y"][1] == A([[[20.0, 0.3 - h3], [20.0, 0.3 + h3]]])
    assert b["A - Z"][0] == A([[21.2, -0.2]])
    assert b["A - Z"][1] == A([[[21.2, -0.2 - h3], [21.2, -0.2 + h3]]])
    d = dots(circles)
    assert len(d) == 2 and d[0][0] == A([[20.0, 0.2], [20.0, 0.4]]) and d[1][0] == A([[21.2, -0.1], [21.2, -0.3]])
    # a comparison keeps its colour in every panel, its dots match its bars, the colours differ
    assert b["A - Y"][2] == cy and [c for _, c in d] == [cy, b["A - Z"][2]] and len({cx, cy, b["A - Z"][2]}) == 3
    assert donuts.get_legend() is None
    assert [t.get_text() for t in circles.get_legend().get_texts()] == ["A - Y", "A - Z"]
    # each panel gets the same width: one panel is half as wide as two
    plot_paired(per_seed[per_seed.task == "donuts_shape"], tmp_path / "one.png")
    assert closed_figures[1].get_size_inches()[0] == pytest.approx(fig.get_size_inches()[0] / 2)


def _band(collection):
    """Rows (x, low, high) of a fill_between band, by x."""
    import numpy as np

    v = np.concatenate([p.vertices for p in collection.get_paths()])
    return np.array([(x, v[v[:, 0] == x, 1].min(), v[v[:, 0] == x, 1].max()) for x in np.unique(v[:, 0])])


def test_scaling_figure_draws_a_line_per_model_with_its_t_band(tmp_path, closed_figures):
    """The Fig. 5 remake: a panel per task, a line per model (mean over seeds at each n_train, log x with
    the sizes as ticks), a band = the t-interval where there are >= 2 seeds. retina_unet at n = 20:
    (0.5, 0.6, 0.7): mean 0.6, half = 4.302653 * 0.1 / sqrt(3) = 0.248414; at 100: three 0.8, no spread.
    Style encodes the model: solid = seg-supervised, dashed = not; circle = one-stage, square = two-stage;
    one colour per model, the same in every panel, its band in its colour; one figure legend."""
    import numpy as np
    from PIL import Image

    from retina_unet.study.report.figures import plot_scaling

    rows = [("donuts_shape", 2, "retina_unet", 20, s, v) for s, v in enumerate([0.5, 0.6, 0.7])]
    rows += [("donuts_shape", 2, "retina_unet", 100, s, 0.8) for s in range(3)]
    rows += [("donuts_shape", 2, "zzz", 100, 0, 0.3), ("donuts_shape", 2, "mask_rcnn", 20, 0, 0.4)]
    rows += [("circles_scale", 2, "retina_net", 50, s, v) for s, v in enumerate([0.1, 0.3])]
    rows += [("circles_scale", 2, "retina_unet", 50, 0, 0.9)]
    df = _df(rows)
    path = tmp_path / "s.png"
    assert plot_scaling(df, path) == path
    fig, = closed_figures
    with Image.open(path) as im:
        assert im.format == "PNG" and "Software" not in im.info
        # saved with the legend right of the panels (bbox_inches="tight"): wider than the figure itself
        assert im.size[0] > fig.get_size_inches()[0] * 110
    assert fig._suptitle.get_text() == "mean over seeds, band = 95% t-interval"
    donuts, circles = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["donuts_shape 2D", "circles_scale 2D"]
    assert donuts.get_ylabel() == "test mAP (IoU > 0.1)" and donuts.get_shared_y_axes().joined(donuts, circles)
    for ax, sizes in ((donuts, [20, 100]), (circles, [50])):
        assert ax.get_xlabel() == "training images (n_train, log scale)" and ax.get_xscale() == "log"
        assert list(ax.get_xticks()) == sizes and [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in sizes]
        assert ax.get_legend() is None

    def lines(ax):
        return {ln.get_label(): (np.asarray(ln.get_xydata()), ln.get_linestyle(), ln.get_marker(), _rgb(ln.get_color()))
                for ln in ax.lines}

    d, c = lines(donuts), lines(circles)
    assert list(d) == ["retina_unet", "mask_rcnn", "zzz"] and list(c) == ["retina_unet", "retina_net"]
    assert d["retina_unet"][0] == pytest.approx(np.array([[20, 0.6], [100, 0.8]]))
    assert d["mask_rcnn"][0] == pytest.approx(np.array([[20, 0.4]]))
    assert d["zzz"][0] == pytest.approx(np.array([[100, 0.3]]))
    assert c["retina_net"][0] == pytest.approx(np.array([[50, 0.2]]))
    assert c["retina_unet"][0] == pytest.approx(np.array([[50, 0.9]]))
    styles = {m: s[1:3] for m, s in {**d, **c}.items()}
    assert styles == {"retina_unet": ("-", "o"), "mask_rcnn": ("--", "s"), "zzz": ("--", "o"), "retina_net": ("--", "o")}
    colours = {m: s[3] for m, s in d.items()} | {"retina_net": c["retina_net"][3]}
    assert len(set(colours.values())) == 4 and c["retina_unet"][3] == colours["retina_unet"]
    # bands: only where two or more seeds (retina_unet in donuts, retina_net in circles)
    (bd,), (bc,) = donuts.collections, circles.collections
    h = 4.302653 * 0.1 / math.sqrt(3)
    assert _band(bd) == pytest.approx(np.array([(20, 0.6 - h, 0.6 + h), (100, 0.8, 0.8)]), abs=1e-5)
    assert _rgb(bd.get_facecolor()[0]) == colours["retina_unet"]
    assert _band(bc) == pytest.approx(np.array([(50, 0.2 - 1.2706205, 0.2 + 1.2706205)]), abs=1e-5)  # t(.975, 1) * .1
    assert _rgb(bc.get_facecolor()[0]) == colours["retina_net"]
    legend, = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["retina_unet", "mask_rcnn", "zzz", "retina_net"]
    assert [_rgb(h.get_color()) for h in legend.legend_handles] == [colours[m] for m in
                                                                     ("retina_unet", "mask_rcnn", "zzz", "retina_net")]
    assert legend.get_title().get_text() == "solid: seg-supervised\ndashed: not\no one-stage, s two-stage"
    # each panel gets the same width: one panel is half as wide as two
    plot_scaling(df[df.task == "donuts_shape"], tmp_path / "one.png")
    assert closed_figures[1].get_size_inches()[0] == pytest.approx(fig.get_size_inches()[0] / 2)


def _curve_envelope(task, dim, model, n, seed, val_maps):
    return {"spec": {"task": task, "dim": dim, "model": model, "n_train": n, "seed": seed},
            "result": {"curve": [{"epoch": e, "val_mAP": v, "loss": 1.0 - e / 10} for e, v in enumerate(val_maps, 1)]}}


def test_learning_curves_figure_has_a_panel_per_task_and_size(tmp_path, closed_figures):
    """Panels: tasks sorted, sizes largest first, only the (task, size) pairs that ran; a line per model
    (mean over seeds per epoch) with its t band, coloured by model as in the figure's legend.
    retina_unet at n = 20: epoch 1 (0.1, 0.3) -> 0.2, epoch 2 (0.3, 0.5) -> 0.4; sd 0.141421, so
    half = t(0.975, 1) * 0.141421 / sqrt(2) = 12.706205 * 0.1."""
    import numpy as np

    from retina_unet.study.report.figures import curve_rows, plot_learning_curves

    envs = [_curve_envelope("donuts_shape", 2, "retina_unet", 20, 0, [0.1, 0.3]),
            _curve_envelope("donuts_shape", 2, "retina_unet", 20, 1, [0.3, 0.5]),
            _curve_envelope("donuts_shape", 2, "zzz", 20, 0, [0.2, 0.2]),
            _curve_envelope("donuts_shape", 2, "retina_net", 100, 0, [0.4, 0.6]),
            _curve_envelope("circles_scale", 2, "retina_unet", 20, 0, [0.7, 0.8]),
            {"spec": {"task": "donuts_shape", "dim": 2, "model": "retina_net", "n_train": 5, "seed": 0}, "result": {}}]
    rows = curve_rows(envs)
    assert list(rows.columns) == ["task_dim", "model", "n_train", "seed", "epoch", "val_mAP", "loss"]
    assert len(rows) == 10 and rows.iloc[0].to_dict() == {"task_dim": "donuts_shape 2D", "model": "retina_unet",
                                                          "n_train": 20, "seed": 0, "epoch": 1, "val_mAP": 0.1,
                                                          "loss": 0.9}
    assert rows.iloc[-1].to_dict() == {"task_dim": "circles_scale 2D", "model": "retina_unet", "n_train": 20,
                                       "seed": 0, "epoch": 2, "val_mAP": 0.8, "loss": 0.8}
    path, note = plot_learning_curves(envs, tmp_path / "lc.png")
    assert path == tmp_path / "lc.png" and path.stat().st_size > 0
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and "Software" not in im.info  # no version tag: regenerated files stay identical
    assert note == "3 panel(s) (n_train 100, 20), 5 run(s)"
    fig, = closed_figures
    assert fig._suptitle.get_text() == "learning curves: mean over seeds, band = 95% t-interval"
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["circles_scale 2D, n_train=20", "donuts_shape 2D, n_train=100",
                                               "donuts_shape 2D, n_train=20"]
    assert axes[0].get_ylabel() == "validation mAP" and all(ax.get_xlabel() == "epoch" for ax in axes)
    assert all(ax.get_shared_y_axes().joined(ax, axes[0]) for ax in axes)
    legend, = fig.legends
    colour = {t.get_text(): _rgb(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}
    assert list(colour) == ["retina_unet", "retina_net", "zzz"] and len(set(colour.values())) == 3

    def drawn(ax):
        return [(np.asarray(ln.get_xydata()), _rgb(ln.get_color())) for ln in ax.lines if len(ln.get_xydata())]

    (a,), (b,), (c, d) = (drawn(ax) for ax in axes)
    assert a[0] == pytest.approx(np.array([[1, 0.7], [2, 0.8]])) and a[1] == colour["retina_unet"]
    assert b[0] == pytest.approx(np.array([[1, 0.4], [2, 0.6]])) and b[1] == colour["retina_net"]
    assert c[0] == pytest.approx(np.array([[1, 0.2], [2, 0.4]])) and c[1] == colour["retina_unet"]
    assert d[0] == pytest.approx(np.array([[1, 0.2], [2, 0.2]])) and d[1] == colour["zzz"]
    bands = [_band(col) for col in axes[2].collections if len(col.get_paths())]
    assert len(bands) == 1 and bands[0] == pytest.approx(np.array([(1, 0.2 - 1.2706205, 0.2 + 1.2706205),
                                                                   (2, 0.4 - 1.2706205, 0.4 + 1.2706205)]), abs=1e-5)


def test_learning_curves_need_two_epochs(tmp_path, closed_figures):
    from retina_unet.study.report.figures import curve_rows, plot_learning_curves

    want = (None, "no learning curves (the result files carry fewer than two epochs)")
    assert plot_learning_curves([], tmp_path / "a.png") == want
    one = [_curve_envelope("donuts_shape", 2, "retina_unet", 20, s, [0.5]) for s in (0, 1)]
    assert plot_learning_curves(one, tmp_path / "b.png") == want
    assert len(curve_rows(one)) == 2
    # epochs or val_mAP missing: those records are dropped before counting epochs
    gaps = [{"spec": one[0]["spec"], "result": {"curve": [{"epoch": 1, "val_mAP": 0.5}, {"epoch": 2},
                                                         {"val_mAP": 0.7}]}}]
    assert plot_learning_curves(gaps, tmp_path / "c.png") == want
    assert not closed_figures and not list(tmp_path.iterdir())
    # records without a loss are drawn all the same (only epoch and val_mAP are needed)
    no_loss = [{"spec": one[0]["spec"], "result": {"curve": [{"epoch": 1, "val_mAP": 0.5}, {"epoch": 2, "val_mAP": 0.6}]}}]
    assert plot_learning_curves(no_loss, tmp_path / "d.png")[0] == tmp_path / "d.png"


def test_csv_files_keep_six_significant_digits_and_no_index(tmp_path):
    from retina_unet.study.report import _csv

    _csv(pd.DataFrame({"x": [1e-05, 0.123456789, 1234567.0], "n": [1, 2, 3]}), tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "x,n\n1e-05,1\n0.123457,2\n1.23457e+06,3\n"


def _store_run(root, run_id, dataset, predictions, targets):
    """A finished run as the report reads it: results/<id>.json and runs/<id>/out/test_predictions.pt."""
    import json

    import torch

    from retina_unet.rundir import save_predictions
    from retina_unet.training.config import TrainConfig

    as_t = lambda d: {k: torch.as_tensor(v) for k, v in d.items()}  # noqa: E731
    out = root / "runs" / run_id / "out"
    out.mkdir(parents=True)
    save_predictions(out / "test_predictions.pt", [as_t(p) for p in predictions], [as_t(t) for t in targets],
                     TrainConfig(), 2, 3, [1])
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / f"{run_id}.json").write_text(json.dumps({"artifacts": f"runs/{run_id}",
                                                                 "result": {"dataset": str(dataset)}}))


def test_examples_figure_draws_the_stored_predictions_on_crops(tmp_path, monkeypatch, closed_figures):
    """Rows = runs (largest n_train first), columns = the first test images (as many as every drawn run
    stored); each panel a 96-pixel crop around the first ground-truth box (clipped into the 128-pixel
    image), the ground truth solid (lw 1), the top 3 predictions scoring above 0.1 dashed, with
    "c<label> <score>" 2 pixels above their corner; colours by class. Worked out by hand below."""
    import json

    import numpy as np
    from PIL import Image

    from retina_unet.study.report.figures import plot_examples
    from toy_data import load_dataset, task_spec, write_dataset
    from toy_data.palette import class_colour, legend

    spec = task_spec("donuts_shape", size=128, margin=4, radii=(8.0, 8.0), hole_radius=3.0)
    data = write_dataset(spec, tmp_path / "data", seed=5, n_train=0, n_val=0, n_test=3, workers=1, progress=False)
    images = load_dataset(data, verify=False, splits=("test",)).split("test").images
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0, np.int64)}
    a_preds = [
        {"boxes": np.array([[62, 72, 78, 88], [30, 40, 50, 60], [0, 0, 4, 4], [40, 50, 48, 66], [70, 80, 80, 90]],
                           np.float32),
         "scores": np.array([0.9, 0.3, 0.05, 0.5, 0.2], np.float32), "labels": np.array([2, 1, 1, 1, 2])},
        {"boxes": np.array([[2, 3, 12, 14], [1, 1, 9, 11], [20, 30, 25, 35]], np.float32),
         "scores": np.array([0.1, 0.8, 0.15], np.float32), "labels": np.array([1, 1, 2])},
        empty,
    ]
    targets = [{"boxes": np.array([[60, 70, 76, 86]], np.float32), "labels": np.array([2])},
               {"boxes": np.array([[0, 0, 10, 12], [100, 100, 110, 110]], np.float32), "labels": np.array([1, 2])},
               {"boxes": np.array([[50, 50, 60, 60]], np.float32), "labels": np.array([1])}]
    root = tmp_path / "study"
    _store_run(root, "a", "../data", a_preds, targets)  # a relative dataset path: from the working directory
    b_preds = [{"boxes": np.array([[60, 70, 76, 86]], np.float32), "scores": np.array([0.6], np.float32),
                "labels": np.array([2])}, empty]
    _store_run(root, "b", data, b_preds, targets[:2])  # stored only 2 images
    (root / "results" / "c.json").write_text(json.dumps({"artifacts": "runs/c", "result": {"dataset": str(data)}}))
    monkeypatch.chdir(root)
    df = pd.DataFrame([("donuts_shape", 2, "retina_unet", 20, 0, "b"), ("donuts_shape", 2, "retina_unet", 100, 0, "a"),
                       ("donuts_shape", 2, "retina_net", 20, 0, "c"), ("donuts_shape", 3, "retina_net", 20, 0, "d3")],
                      columns=["task", "dim", "model", "n_train", "seed", "run_id"])
    path, note = plot_examples(root, df, tmp_path / "ex.png", n=3)
    assert path == tmp_path / "ex.png"
    assert note == (f"2 run(s) drawn; skipped: c: FileNotFoundError: {root / 'runs' / 'c' / 'out'} has no stored "
                    "test predictions (test_predictions.pt)")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "P" and im.size == (384, 400)  # 2 x 2 panels of 2.4 x 2.5 in, 80 dpi
    fig, = closed_figures
    assert fig._suptitle.get_text() == ("crops around the object; the run's stored test predictions; top-3 "
                                        f"predictions (score > 0.1)\n{legend()}")
    assert len(fig.axes) == 4
    (a0, a1), (b0, b1) = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_ylabel() for ax in fig.axes] == ["retina_unet\nn=100", "", "retina_unet\nn=20", ""]
    assert [ax.get_title() for ax in fig.axes] == ["test #0 (GT class 2)", "test #1 (GT class 1)", "", ""]
    # crops: image 0 around (60, 70, 76, 86): centre (68, 78) -> top 68 - 48 = 20, left 78 - 48 = 30;
    # image 1 around (0, 0, 10, 12): clipped to (0, 0)
    for ax, j, (top, left) in ((a0, 0, (20, 30)), (a1, 1, (0, 0)), (b0, 0, (20, 30)), (b1, 1, (0, 0))):
        shown, = ax.images
        assert np.array_equal(shown.get_array(), images[j][top:top + 96, left:left + 96])
        assert ax.get_xlim() == (-0.5, 95.5) and ax.get_ylim() == (95.5, -0.5)
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []

    def boxes(ax):
        return [(p.get_xy(), p.get_width(), p.get_height(), p.get_linestyle(), p.get_linewidth(),
                 _rgb(p.get_edgecolor())) for p in ax.patches]

    def texts(ax):
        return [(t.get_position(), t.get_text(), _rgb(t.get_color())) for t in ax.texts]

    c1, c2 = _rgb(class_colour(1)), _rgb(class_colour(2))
    gt0 = ((39.5, 39.5), 16, 16, "-", 1.0, c2)
    assert boxes(a0) == [gt0, ((41.5, 41.5), 16, 16, "--", 1.5, c2), ((19.5, 19.5), 16, 8, "--", 1.5, c1),
                         ((9.5, 9.5), 20, 20, "--", 1.5, c1)]
    assert texts(a0) == [((42, 40), "c2 0.90", c2), ((20, 18), "c1 0.50", c1), ((10, 8), "c1 0.30", c1)]
    gt1 = [((-0.5, -0.5), 12, 10, "-", 1.0, c1), ((99.5, 99.5), 10, 10, "-", 1.0, c2)]
    assert boxes(a1) == [*gt1, ((0.5, 0.5), 10, 8, "--", 1.5, c1), ((29.5, 19.5), 5, 5, "--", 1.5, c2)]
    assert texts(a1) == [((1, -1), "c1 0.80", c1), ((30, 18), "c2 0.15", c2)]  # 0.1 is not above the floor
    assert boxes(b0) == [gt0, ((39.5, 39.5), 16, 16, "--", 1.5, c2)] and texts(b0) == [((40, 38), "c2 0.60", c2)]
    assert boxes(b1) == gt1 and texts(b1) == []
    assert all(p.get_clip_on() for ax in fig.axes for p in [*ax.patches, *ax.texts])


def test_examples_figure_says_why_nothing_was_drawn(tmp_path, closed_figures):
    import json

    from retina_unet.study.report.figures import plot_examples

    df = pd.DataFrame([("donuts_shape", 3, "retina_net", 20, 0, "x")],
                      columns=["task", "dim", "model", "n_train", "seed", "run_id"])
    assert plot_examples(tmp_path, df, tmp_path / "e.png") == (None, "no 2D runs to draw")
    (tmp_path / "results").mkdir()
    for run in ("y", "z"):
        (tmp_path / "results" / f"{run}.json").write_text(json.dumps({"artifacts": f"runs/{run}",
                                                                     "result": {"dataset": "d"}}))
    df2 = pd.concat([df.assign(dim=2, run_id="y"), df.assign(dim=2, run_id="z", n_train=40)])
    assert plot_examples(tmp_path, df2, tmp_path / "e.png") == (
        None, f"example predictions unavailable: z: FileNotFoundError: {tmp_path / 'runs' / 'z' / 'out'} has no "
        f"stored test predictions (test_predictions.pt); y: FileNotFoundError: {tmp_path / 'runs' / 'y' / 'out'} has "
        "no stored test predictions (test_predictions.pt)")
    assert not closed_figures and not (tmp_path / "e.png").exists()


def test_example_runs_pick_the_lowest_seed_at_the_largest_and_smallest_size():
    """Per model (paper order, then unknown models sorted): the lowest seed's run at the largest and
    the smallest n_train (once when they are equal); one task only, donuts_shape when present."""
    from retina_unet.study.report.figures import _example_runs

    cols = ["task", "dim", "model", "n_train", "seed", "run_id"]
    rows = [("circles_scale", 2, "retina_unet", 20, 0, "cs")]
    rows += [("donuts_shape", 2, "retina_unet", n, s, f"u{n}s{s}") for n in (20, 100, 1000) for s in (1, 0, 2)]
    rows += [("donuts_shape", 2, "zzz", 50, 0, "z"), ("donuts_shape", 2, "aaa", 50, 0, "a")]
    rows += [("donuts_shape", 2, "retina_net", 100, s, f"n100s{s}") for s in (4, 0)]
    rows += [("donuts_shape", 2, "retina_net", 20, 4, "n20s4")]  # seed 0 ran only at 100: picked once
    picks = _example_runs(pd.DataFrame(rows, columns=cols))
    assert [r.run_id for r in picks] == ["u1000s0", "u20s0", "n100s0", "a", "z"]
    # without donuts_shape: the first task (in sorted order) only
    rows = [("donuts_pattern", 2, "retina_net", 20, 0, "p"), ("circles_scale", 2, "retina_net", 20, 0, "c"),
            ("circles_scale", 2, "retina_net", 40, 0, "c40")]
    assert [r.run_id for r in _example_runs(pd.DataFrame(rows, columns=cols))] == ["c40", "c"]
    assert _example_runs(pd.DataFrame(columns=cols)) == []
    # a model without a run at the task's lowest seed (its seed-0 run failed) gets its own lowest
    # seed's runs, not an IndexError that stopped the whole report
    rows = [("donuts_shape", 2, "retina_unet", 20, 0, "u0"), ("donuts_shape", 2, "retina_net", 20, 1, "n1"),
            ("donuts_shape", 2, "retina_net", 20, 2, "n2")]
    assert [r.run_id for r in _example_runs(pd.DataFrame(rows, columns=cols))] == ["u0", "n1"]


def _hand_results():
    """donuts_shape 2D, seeds 0-2: retina_unet (0.6, 0.7, 0.8) at n=20, 0.9 x 3 at 100; retina_net 0.5 x 3 at
    20, (0.4, 0.3, 0.2) at 100; mask_rcnn (0.7, 0.85, 1.0) at 20, 0.8 x 3 at 100; detunet 0.65 at 20 (seed 0)."""
    rows = []
    for model, n, values in (("retina_unet", 20, [0.6, 0.7, 0.8]), ("retina_unet", 100, [0.9, 0.9, 0.9]),
                             ("retina_net", 20, [0.5, 0.5, 0.5]), ("retina_net", 100, [0.4, 0.3, 0.2]),
                             ("mask_rcnn", 20, [0.7, 0.85, 1.0]), ("mask_rcnn", 100, [0.8, 0.8, 0.8]),
                             ("detunet", 20, [0.65])):
        rows += [("donuts_shape", 2, model, n, s, v) for s, v in enumerate(values)]
    return _df(rows)


def test_rendered_report_of_a_hand_made_results_table(tmp_path, closed_figures):
    """The whole README of a hand-made table, and its CSVs. t intervals (3 seeds, t(0.975, 2) = 4.302653,
    half = 4.302653 * sd / sqrt(3) = 2.484138 * sd): sd 0.1 -> +-0.248; sd 0.15 -> +-0.373; sd 0.05 -> +-0.124.
    MDD (3 pairs) = (t(0.975, 2) + t(0.8, 2)) * sd / sqrt(3) = (4.302653 + 1.060660) / 1.732051 * sd
    = 3.096511 * sd: 0.310 for sd 0.1, 0.155 for sd 0.05.
    Paired (retina_unet - x): retina_net at 20: (0.1, 0.2, 0.3) -> 0.200 [-0.048, 0.448], not resolved;
    at 100: (0.5, 0.6, 0.7) -> 0.600 [0.352, 0.848], better; mask_rcnn at 20: (-0.1, -0.15, -0.2) ->
    -0.150 [-0.274, -0.026], worse (sd 0.05); at 100: 0.1 x 3 -> 0.100 [0.100, 0.100], MDD 0, better;
    detunet at 20: one pair, -0.05, no interval, no MDD, not resolved.
    The findings rows are findings.py's (tested in tests/test_study_findings.py); here only which are
    shown and how (the three other tasks' are left out, as "not measured in this study")."""
    from retina_unet.study.report import render_report
    from retina_unet.study.report.findings import check_findings

    df = _hand_results()
    out = tmp_path / "r"
    readme = render_report(df, out, ["- first header line", "- second"], title="hand")
    assert readme == out / "README.md"
    findings = check_findings(df)
    shown = [f for f in findings if f.where == "donuts_shape 2D"]
    assert len(shown) == 5 and len(findings) > len(shown)
    finding_rows = "\n".join(
        f"| {f.where} | {f.paper} | {f.rule} | {f.ours} | "
        f"{f.verdict if f.verdict == 'not measured' else '**' + f.verdict + '**'} | {f.resolution()} |" for f in shown)
    assert [f.verdict for f in shown].count("not measured") == 1
    want = f"""# Study `hand`: test mAP vs training-set size

_Generated by `python -m retina_unet.study report` from the result files; do not edit by hand._

- first header line
- second

## The paper's findings, checked

Rules fixed in code before the data (`retina_unet/study/report/findings.py`): each claim becomes a per-seed paired \
statistic with a 95% Student-t interval. **supported**: the interval excludes 0 (for "no gain" / "same level" claims: \
the 0.02 margin) in the paper's direction; **contradicted**: it excludes it the other way; **consistent, \
unresolved** / **against, unresolved**: the interval spans it and the mean agrees / disagrees with the paper. A \
point estimate alone never supports a claim. MDD: the minimum detectable difference (5% two-sided, 80% power) with \
the seeds run; "needs ~k": the seeds at which the observed gap would be detectable.

Verdicts: 2 against, unresolved, 2 contradicted, 1 not measured.

| where | paper says | rule | our numbers | verdict | resolution |
|---|---|---|---|---|---|
{finding_rows}

Not measured in this study (task not in the grid): circles_scale, donuts_pattern.

## Test mAP vs training-set size (the paper's Fig. 5)

![scaling](scaling.png)

Colour = model; solid line = trained with segmentation supervision, dashed = not; circle = one-stage, square = \
two-stage.

**donuts_shape 2D** — test mAP, mean [95% CI] (seeds)

| n_train | detunet | mask_rcnn | retina_net | retina_unet |
|---|---|---|---|---|
| 100 | – | 0.800 [0.800, 0.800] (n=3) | 0.300 [0.052, 0.548] (n=3) | 0.900 [0.900, 0.900] (n=3) |
| 20 | 0.650 (n=1) | 0.850 [0.477, 1.223] (n=3) | 0.500 [0.500, 0.500] (n=3) | 0.700 [0.452, 0.948] (n=3) |

## Paired differences per task (paired by seed)

![paired](paired_difference.png)

| comparison | task | n_train | mean diff [95% CI] | pairs | MDD | CI excludes 0 |
|---|---|---|---|---|---|---|
| retina_unet - detunet | donuts_shape 2D | 20 | -0.050 | 1 | – | not resolved |
| retina_unet - mask_rcnn | donuts_shape 2D | 100 | 0.100 [0.100, 0.100] | 3 | 0.000 | U-Net better |
| retina_unet - mask_rcnn | donuts_shape 2D | 20 | -0.150 [-0.274, -0.026] | 3 | 0.155 | U-Net worse |
| retina_unet - retina_net | donuts_shape 2D | 100 | 0.600 [0.352, 0.848] | 3 | 0.310 | U-Net better |
| retina_unet - retina_net | donuts_shape 2D | 20 | 0.200 [-0.048, 0.448] | 3 | 0.310 | not resolved |

## Per-class AP on circles_scale (class = object size)

Not measured (circles_scale not in the study, or no per-class AP in its results).


## Example test predictions

example predictions unavailable: no study folder (report made from a results table)

## Learning curves

no learning curves (the result files carry fewer than two epochs)

## Files

- `results.csv`: one row per run (task, dim, model, n_train, seed, mAP, per-class AP, patient AP, wall time, commit)
- `summary.csv`, `paired_differences.csv`, `per_class_ap.csv`, `findings.csv`: the tables above

"""
    assert readme.read_text() == want
    scaling, paired_fig = closed_figures  # the paired figure: every comparison, labelled, its seeds as dots
    assert [ln.get_label() for ln in scaling.axes[0].lines] == ["retina_unet", "retina_net", "mask_rcnn", "detunet"]
    ax, = paired_fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["retina_unet - retina_net", "retina_unet - mask_rcnn",
                                                                   "retina_unet - detunet"]
    assert [len(col.get_offsets()) for col in ax.collections if type(col).__name__ == "PathCollection"] == [6, 6, 1]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "findings.csv", "paired_difference.png",
                                                     "paired_differences.csv", "results.csv", "scaling.png",
                                                     "summary.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), df)
    assert (out / "summary.csv").read_text() == """task,dim,model,n_train,mean,ci_low,ci_high,n_seeds
donuts_shape,2,detunet,20,0.65,,,1
donuts_shape,2,mask_rcnn,20,0.85,0.477379,1.22262,3
donuts_shape,2,mask_rcnn,100,0.8,0.8,0.8,3
donuts_shape,2,retina_net,20,0.5,0.5,0.5,3
donuts_shape,2,retina_net,100,0.3,0.0515862,0.548414,3
donuts_shape,2,retina_unet,20,0.7,0.451586,0.948414,3
donuts_shape,2,retina_unet,100,0.9,0.9,0.9,3
"""
    paired = pd.read_csv(out / "paired_differences.csv")
    assert list(paired.columns) == ["comparison", "task", "dim", "n_train", "mean", "ci_low", "ci_high", "n_pairs", "mdd"]
    assert list(paired.comparison) == ["retina_unet - retina_net"] * 2 + ["retina_unet - mask_rcnn"] * 2 + [
        "retina_unet - detunet"]
    assert list(paired.n_train) == [20, 100, 20, 100, 20] and list(paired.n_pairs) == [3, 3, 3, 3, 1]
    h1, h2 = 2.484138 * 0.1, 2.484138 * 0.05
    import numpy as np

    want_num = np.array([[0.2, 0.2 - h1, 0.2 + h1, 0.309651], [0.6, 0.6 - h1, 0.6 + h1, 0.309651],
                         [-0.15, -0.15 - h2, -0.15 + h2, 0.154826], [0.1, 0.1, 0.1, 0.0],
                         [-0.05, np.nan, np.nan, np.nan]])
    got = paired[["mean", "ci_low", "ci_high", "mdd"]].to_numpy(dtype=float)
    assert got == pytest.approx(want_num, abs=1e-5, nan_ok=True)
    got_findings = pd.read_csv(out / "findings.csv", keep_default_na=False)
    assert list(got_findings.columns) == ["claim", "where", "paper", "rule", "ours", "verdict", "resolution"]
    assert got_findings.to_dict("records") == [
        {"claim": f.key, "where": f.where, "paper": f.paper, "rule": f.rule, "ours": f.ours, "verdict": f.verdict,
         "resolution": f.resolution()} for f in findings]
    # from results.csv itself: the source is not rewritten
    again = tmp_path / "again"
    again.mkdir()
    (again / "results.csv").write_text("keep me")
    render_report(df, again, [], title="hand", write_results=False)
    assert (again / "results.csv").read_text() == "keep me"


def test_per_class_section_summarises_each_size_class_of_circles_scale(tmp_path):
    """Only circles_scale rows and only its AP columns that have a value; a row per (dim, model, n_train)
    in sorted order. retina_net 2D n=20, class 1 (0.2, 0.3, 0.4): 0.300 [0.052, 0.548]; class 2 0.5 x 3."""
    from retina_unet.study.report import _per_class_section

    nan = float("nan")
    cols = ["task", "dim", "model", "n_train", "seed", "map", "ap_class1", "ap_class2", "ap_class3"]
    rows = [("circles_scale", 2, "retina_net", 20, s, 0.1, a1, 0.5, nan) for s, a1 in enumerate([0.2, 0.3, 0.4])]
    rows += [("circles_scale", 2, "retina_unet", 20, 0, 0.1, 0.9, nan, nan),
             ("circles_scale", 3, "retina_net", 20, 0, 0.1, 0.25, 0.35, nan),
             ("circles_scale", 2, "retina_net", 100, 0, 0.1, 0.6, 0.1, nan),
             ("donuts_shape", 2, "retina_net", 20, 0, 0.1, 0.8, 0.8, 0.7)]  # not circles_scale: ignored
    md = _per_class_section(pd.DataFrame(rows, columns=cols), tmp_path)
    assert md == ["## Per-class AP on circles_scale (class = object size)", "",
                  "| dim | model | n_train | AP class 1 | AP class 2 |\n"
                  "|---|---|---|---|---|\n"
                  "| 2D | retina_net | 20 | 0.300 [0.052, 0.548] | 0.500 [0.500, 0.500] |\n"
                  "| 2D | retina_net | 100 | 0.600 | 0.100 |\n"
                  "| 2D | retina_unet | 20 | 0.900 | – |\n"
                  "| 3D | retina_net | 20 | 0.250 | 0.350 |", ""]
    assert (tmp_path / "per_class_ap.csv").read_text() == """dim,model,n_train,class,mean,ci_low,ci_high,n_seeds
2,retina_net,20,1,0.3,0.0515862,0.548414,3
2,retina_net,20,2,0.5,0.5,0.5,3
2,retina_net,100,1,0.6,,,1
2,retina_net,100,2,0.1,,,1
2,retina_unet,20,1,0.9,,,1
2,retina_unet,20,2,,,,0
3,retina_net,20,1,0.25,,,1
3,retina_net,20,2,0.35,,,1
"""
    missing = ["## Per-class AP on circles_scale (class = object size)", "",
               "Not measured (circles_scale not in the study, or no per-class AP in its results).", ""]
    no_values = pd.DataFrame([r[:6] + (nan, nan, nan) for r in rows], columns=cols)
    assert _per_class_section(no_values, tmp_path / "x") == missing
    assert _per_class_section(pd.DataFrame([rows[-1]], columns=cols), tmp_path / "y") == missing
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_wall_time_section_per_model():
    """Runs counted with or without a time; median and range of the times there are, to the second."""
    from retina_unet.study.report import _wall_time_section

    nan = float("nan")
    df = pd.DataFrame({"model": ["retina_unet", "retina_net", "retina_net", "retina_net", "retina_net", "retina_unet"],
                       "wall_time_s": [5.2, 10.0, 20.0, nan, 40.0, 6.0]})
    assert _wall_time_section(df) == [
        "## Wall time per run", "", "Measured on a machine shared with other jobs unless the provenance says otherwise.",
        "", "| model | runs | median s | range s |\n|---|---|---|---|\n| retina_net | 4 | 20 | 10-40 |\n"
        "| retina_unet | 2 | 6 | 5-6 |", ""]
    assert _wall_time_section(df.assign(wall_time_s=nan)) == []
    assert _wall_time_section(df.drop(columns="wall_time_s")) == []


def test_shared_images_note_names_the_mask_free_models_only_when_both_donut_tasks_are_in():
    """donuts_shape and donuts_pattern share their images: the note names the models that read no mask
    (retina_net, faster_rcnn_plus), in one sentence, and only when both tasks are in the table."""
    from retina_unet.models.registry import MODEL_NAMES, reads_masks
    from retina_unet.study.report import _shared_images_note

    assert [m for m in MODEL_NAMES if not reads_masks(m)] == ["retina_net", "faster_rcnn_plus"]
    rows = [(t, 2, m, 20, 0, 0.5) for t in ("donuts_shape", "donuts_pattern")
            for m in ("retina_unet", "retina_net", "faster_rcnn_plus", "mask_rcnn", "detunet", "ufrcnn_plus")]
    (line, blank) = _shared_images_note(_df(rows))
    assert blank == ""
    assert "so faster_rcnn_plus and retina_net, which never read a mask, give the same results on both tasks" in line
    assert not any(m in line for m in ("retina_unet", "mask_rcnn", "detunet", "ufrcnn_plus"))
    one = _shared_images_note(_df([r for r in rows if r[2] != "faster_rcnn_plus"]))
    assert "so retina_net, which never reads a mask, gives the same results" in one[0]
    assert _shared_images_note(_df([r for r in rows if r[0] == "donuts_shape"])) == []
    assert _shared_images_note(_df([r for r in rows if r[2] in ("retina_unet", "mask_rcnn")])) == []
    scale = [("circles_scale", 2, "retina_net", 20, 0, 0.5), ("donuts_shape", 2, "retina_net", 20, 0, 0.5)]
    assert _shared_images_note(_df(scale)) == []


def test_provenance_lines_of_a_study_folder(tmp_path, monkeypatch):
    """The README's header, line by line, from a study folder whose sweeps, failures, history, run times,
    commits and machines are set by hand: sweeps 600 s + (no time: 0) + 176.5 s = 776.5 s = 12.94 min
    (10.0, 0.0 and 2.94 min each); runs 60 + 30 + 90 + 120 s = 5.0 min; epochs=1 against the smoke
    preset's 2 x 2 steps: 2 steps, 50%."""
    import json

    monkeypatch.setattr("retina_unet.study.report.git_commit", lambda: "HEAD1")
    defn = StudyDefinition(name="prov", tasks=("donuts_shape",), models=("retina_net", "retina_unet"), n_train=(20,),
                           seeds=(0, 1), dims=(2,), train_preset="smoke", overrides={"epochs": 1})
    study = tmp_path / "s"
    run_study(defn, study, engine=FakeEngine(), backend=LocalBackend(1), progress=False)
    paths = sorted((study / "results").glob("*.json"))
    assert len(paths) == 4
    for path, wall, commit, resumed in zip(paths, (60, 30, 90, 120), ("c1", "c2", "c1", None), (True, False, True, False),
                                           strict=True):
        env = json.loads(path.read_text())
        env["runner"] = {"wall_time_s": wall, "cpu": "CPU A", "cpus": 2, "threads": 1, "device": "cpu", "platform": "L"}
        env["result"].update(environment={"torch": "2.x"}, git_commit=commit, resumed=resumed)
        env["commit"] = "c0"  # used only where the result carries no commit
        path.write_text(json.dumps(env))
    (study / "sweeps.jsonl").write_text(
        json.dumps({"command": "run A", "commit": "abc", "backend": "local(1)", "done": 3, "failed": 1, "skipped": 0,
                    "wall_time_s": 600.0}) + "\n"
        + json.dumps({"command": "run B", "commit": "def", "backend": "ray", "done": 1, "failed": 0, "skipped": 3}) + "\n"
        + json.dumps({"command": "run C", "commit": "fed", "backend": "ray", "done": 0, "failed": 0, "skipped": 4,
                      "wall_time_s": 176.5}) + "\n")
    (study / "failed").mkdir(exist_ok=True)
    (study / "failed" / "x.json").write_text(json.dumps({"run_id": "gone"}))
    (study / "failed" / "y.json").write_text(json.dumps({"run_id": paths[0].stem}))  # failed once, then finished
    doc = json.loads((study / "study.json").read_text())
    doc["history"] = [{"event": "created", "summary": "4 runs"}, {"event": "grid extended", "summary": "added 2 runs"}]
    (study / "study.json").write_text(json.dumps(doc))
    ph = doc["protocol_hash"]
    text = write_report(study, tmp_path / "r", engine=FakeEngine(), command="cmd").read_text()
    header = text.split("_Generated by `python -m retina_unet.study report` from the result files; do not edit by "
                        "hand._\n\n")[1].split("\n\n## ")[0].splitlines()
    assert header == [
        f"- study: `prov` (protocol `{ph}`): tasks ['donuts_shape'], models ['retina_net', 'retina_unet'], n_train "
        "[20], seeds [0, 1], dims [2], training preset `smoke`, overrides {'epochs': 1}",
        "- **training schedule: 2 steps per run, 50% of the `smoke` preset's 4.** The models are compared at an equal, "
        "small compute budget, before they converge: this favours the models that learn fastest, and the mAPs are "
        "below what the full schedule reaches (docs/speed.md, \"quick schedule\").",
        "- runs: 4 of 4 finished, 1 failed, 2 resumed after an interruption",
        "- end-to-end wall time: 12.9 min over 3 sweep(s); sum of run times 5.0 min",
        "- machine(s) of the runs: CPU A, 2 cpus, 1 torch thread(s) per run, cpu, torch 2.x, L (4 runs) (seeded runs "
        "repeat bit for bit on the same machine and software, not across CPUs)",
        "- code commit(s) of the runs: `c0`, `c1`, `c2`",
        "- sweep `run A` at commit `abc` on local(1): 3 done, 1 failed, 0 skipped, 10.0 min",
        "- sweep `run B` at commit `def` on ray: 1 done, 0 failed, 3 skipped, 0.0 min",
        "- sweep `run C` at commit `fed` on ray: 0 done, 0 failed, 4 skipped, 2.9 min",
        "- history: created: 4 runs",
        "- history: grid extended: added 2 runs",
        "- report made at commit `HEAD1` by `cmd`",
    ]


def test_provenance_of_a_study_without_results_or_extras(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr("retina_unet.study.report.git_commit", lambda: "HEAD1")
    defn = StudyDefinition(name="e", tasks=("donuts_shape",), models=("retina_net",), n_train=(20,), seeds=(0,))
    run_study(defn, tmp_path / "s", engine=FakeEngine(), backend=LocalBackend(1), progress=False, max_runs=0)
    (tmp_path / "s" / "sweeps.jsonl").unlink(missing_ok=True)
    text = write_report(tmp_path / "s", tmp_path / "r", engine=FakeEngine()).read_text()
    lines = text.splitlines()
    assert "- runs: 0 of 1 finished" in lines
    assert "- end-to-end wall time: 0.0 min over 0 sweep(s); sum of run times 0.0 min" in lines
    assert "- machine(s) of the runs: unknown (seeded runs repeat bit for bit on the same machine and software, not "\
           "across CPUs)" in lines
    assert "- code commit(s) of the runs: unknown" in lines
    assert (f"- report made at commit `HEAD1` by `python -m retina_unet.study report --out {tmp_path / 's'} "
            f"--report-dir {tmp_path / 'r'}`") in lines
    assert not any("overrides" in ln or "training schedule" in ln or "sweep `" in ln for ln in lines)
    d = defn
    ph = json.loads((tmp_path / "s" / "study.json").read_text())["protocol_hash"]
    assert (f"- study: `e` (protocol `{ph}`): tasks ['donuts_shape'], models ['retina_net'], n_train [20], seeds [0], "
            f"dims {list(d.dims)}, training preset `{d.train_preset}`") in lines


def test_machines_lists_each_distinct_machine_with_its_run_count():
    """The runner's record first, the run's own environment for what it lacks; sorted; unknown last."""
    from retina_unet.study.report import _machines

    a = {"runner": {"cpu": "CPU A", "cpus": 4, "threads": 1, "device": "cpu", "platform": "Linux-x"},
         "result": {"environment": {"cpu": "ignored", "cpu_count": 99, "gpu": "ignored", "torch": "2.1",
                                    "platform": "ignored"}}}
    b = {"runner": {}, "result": {"environment": {"cpu": "CPU B", "cpu_count": 8, "gpu": "H100", "torch": "2.2",
                                                  "platform": "Linux-y"}}}
    c = {"result": {}}
    assert _machines([a, c, b, a]) == ("CPU A, 4 cpus, 1 torch thread(s) per run, cpu, torch 2.1, Linux-x (2 runs); "
                                       "CPU B, 8 cpus, H100, torch 2.2, Linux-y (1 runs); unknown (1 runs)")
    # the same machine in two precisions (cpu_bf16 runs on a CPU with and without native bfloat16) is two rows
    a16 = {**a, "result": {**a["result"], "precision": "bfloat16-autocast"}}
    assert _machines([a, a16]) == ("CPU A, 4 cpus, 1 torch thread(s) per run, cpu, torch 2.1, Linux-x, "
                                   "bfloat16-autocast (1 runs); "
                                   "CPU A, 4 cpus, 1 torch thread(s) per run, cpu, torch 2.1, Linux-x (1 runs)")
    assert _machines([]) == "unknown"
    assert _machines([{"runner": None, "result": {"environment": None}}]) == "unknown (1 runs)"


def test_current_results_says_why_it_could_not_filter(tmp_path):
    from retina_unet.study.report import _current_results
    from retina_unet.study.store import StudyFolder

    defn = StudyDefinition(name="e", tasks=("donuts_shape",), models=("retina_net",), n_train=(20,), seeds=(0, 1))
    run_study(defn, tmp_path / "s", engine=FakeEngine(), backend=LocalBackend(1), progress=False)
    folder = StudyFolder(tmp_path / "s")

    class Broken(FakeEngine):
        def resolve(self, spec):
            raise ValueError("boom")

    kept, note = _current_results(folder, folder.load_definition(), Broken())
    assert len(kept) == 2
    assert note.startswith("could not resolve the current run configs (StudyError: study 'e': 2 run(s) cannot run")
    assert note.endswith("rejects its config: ValueError: boom); all results used")
    kept, note = _current_results(folder, folder.load_definition(), FakeEngine())
    assert len(kept) == 2 and note == ""


def test_paired_section_orders_rows_and_calls_an_interval_at_zero_unresolved(tmp_path):
    """Rows by comparison, task, dim (ascending), n_train (descending). circles_scale 2D: equal mAPs, diffs
    (0, 0): the interval [0, 0] touches 0, so it is not resolved. donuts_shape 2D: diffs (0.1, 0.3), mean 0.2,
    sd 0.141421, half = t(0.975, 1) * 0.1 = 1.270621; MDD (2 pairs) = (t(0.975, 1) + t(0.8, 1)) * 0.1 =
    (12.706205 + 1.376382) * 0.1 = 1.408. donuts_shape 3D: diffs (0.1, 0.1)."""
    from retina_unet.study.report import _paired_section

    rows = []
    for task, dim, unet, net in (("circles_scale", 2, (0.5, 0.6), (0.5, 0.6)), ("donuts_shape", 2, (0.5, 0.7), (0.4, 0.4)),
                                 ("donuts_shape", 3, (0.6, 0.7), (0.5, 0.6))):
        rows += [(task, dim, "retina_unet", 20, s, v) for s, v in enumerate(unet)]
        rows += [(task, dim, "retina_net", 20, s, v) for s, v in enumerate(net)]
    md = _paired_section(_df(rows), tmp_path)
    assert md == ["## Paired differences per task (paired by seed)", "", "![paired](paired_difference.png)", "",
                  "| comparison | task | n_train | mean diff [95% CI] | pairs | MDD | CI excludes 0 |\n"
                  "|---|---|---|---|---|---|---|\n"
                  "| retina_unet - retina_net | circles_scale 2D | 20 | 0.000 [0.000, 0.000] | 2 | 0.000 | not resolved |\n"
                  "| retina_unet - retina_net | donuts_shape 2D | 20 | 0.200 [-1.071, 1.471] | 2 | 1.408 | not resolved |\n"
                  "| retina_unet - retina_net | donuts_shape 3D | 20 | 0.100 [0.100, 0.100] | 2 | 0.000 | U-Net better |",
                  ""]
    assert (tmp_path / "paired_difference.png").stat().st_size > 0
    # one model only: nothing to pair, no table, no figure, no CSV
    only = _df([r for r in rows if r[2] == "retina_net"])
    assert _paired_section(only, tmp_path / "x") == [
        "## Paired differences per task (paired by seed)", "",
        "Not measured (needs Retina U-Net and Retina Net, Mask R-CNN or DetU-Net).", ""]
    assert not (tmp_path / "x").exists()


def test_write_report_hands_the_study_to_render_report(tmp_path, monkeypatch):
    """write_report reads the study folder and renders it: the study's name as title, every current
    result's envelope (learning curves), the folder (example predictions), n_examples as given (3 by
    default); a folder without study.json is refused."""
    import retina_unet.study.report as report

    defn = StudyDefinition(name="handed", tasks=("donuts_shape",), models=("retina_net",), n_train=(20,), seeds=(0, 1))
    run_study(defn, tmp_path / "s", engine=FakeEngine(), backend=LocalBackend(1), progress=False)
    seen = []
    monkeypatch.setattr(report, "render_report", lambda *a, **kw: seen.append((a, kw)) or "done")
    assert write_report(tmp_path / "s", tmp_path / "r", engine=FakeEngine()) == "done"
    assert write_report(tmp_path / "s", tmp_path / "r", n_examples=5, engine=FakeEngine()) == "done"
    (args, kw), (_, kw5) = seen
    assert len(args[0]) == 2 and args[1] == tmp_path / "r" and args[2][0].startswith("- study: `handed`")
    assert kw["title"] == "handed" and kw["study_root"] == tmp_path / "s" and kw["n_examples"] == 3
    assert sorted(e["spec"]["seed"] for e in kw["envelopes"]) == [0, 1] and kw5["n_examples"] == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^.*empty is not a study folder \(no study\.json\)$"):
        write_report(tmp_path / "empty", tmp_path / "r2", engine=FakeEngine())


def test_examples_use_the_stored_predictions_without_rehashing_the_dataset(tmp_path, monkeypatch, closed_figures):
    """The dataset is opened without checksums (a report must not re-hash every image: a byte changed in
    the test images is drawn, not refused), only the first n images are read (3 by default)."""
    import numpy as np

    from retina_unet.study.report.figures import plot_examples, stored_examples
    from toy_data import load_dataset, task_spec, write_dataset

    spec = task_spec("donuts_shape", size=128, margin=4, radii=(8.0, 8.0), hole_radius=3.0)
    data = write_dataset(spec, tmp_path / "data", seed=5, n_train=0, n_val=0, n_test=5, workers=1, progress=False)
    raw = bytearray((data / "test" / "images.npy").read_bytes())
    raw[-1] ^= 0xFF  # the last byte of the last image: checksum no longer matches
    (data / "test" / "images.npy").write_bytes(bytes(raw))
    images = load_dataset(data, verify=False, splits=("test",)).split("test").images
    box = {"boxes": np.array([[60, 70, 76, 86]], np.float32), "labels": np.array([1])}
    pred = {**box, "scores": np.array([0.9], np.float32)}
    # image 0: 30 predictions tied at 0.5 (boxes (k, 0, k + 2, 2)), then one at 0.9: the top 3 are the 0.9 and
    # the first two tied ones in stored order (a stable sort; numpy's default sort puts index 2 before 1 here)
    tied = {"boxes": np.array([[k, 0, k + 2, 2] for k in range(30)] + [[60, 70, 76, 86]], np.float32),
            "scores": np.array([0.5] * 30 + [0.9], np.float32), "labels": np.array([1] * 31)}
    _store_run(tmp_path / "st", "a", data, [tied] + [pred] * 4, [box] * 5)
    env = {"artifacts": "runs/a", "result": {"dataset": str(data)}}
    got, preds, gts = stored_examples(tmp_path / "st", env, 10)
    assert got.dtype == np.float32 and got.shape == (5, 128, 128) and np.array_equal(got, images[:5])
    assert len(preds) == len(gts) == 5 and np.array_equal(gts[4]["boxes"], box["boxes"])
    df = pd.DataFrame([("donuts_shape", 2, "retina_net", 20, 0, "a", 0.5)],
                      columns=["task", "dim", "model", "n_train", "seed", "run_id", "map"])
    path, note = plot_examples(tmp_path / "st", df, tmp_path / "e.png")
    assert note == "1 run(s) drawn" and len(closed_figures[0].axes) == 3
    # crop of image 0: top 68 - 48 = 20, left 78 - 48 = 30; a label 2 pixels above each box's corner
    assert [(t.get_position(), t.get_text()) for t in closed_figures[0].axes[0].texts] == [
        ((40, 38), "c1 0.90"), ((-30, -22), "c1 0.50"), ((-30, -21), "c1 0.50")]
    # two runs without stored predictions: both named, in pick order
    (tmp_path / "st" / "results" / "f1.json").write_text('{"artifacts": "runs/f1", "result": {"dataset": "d"}}')
    (tmp_path / "st" / "results" / "f2.json").write_text('{"artifacts": "runs/f2", "result": {"dataset": "d"}}')
    more = pd.concat([df, df.assign(model="retina_unet", run_id="f1"), df.assign(model="zzz", run_id="f2")])
    _, note = plot_examples(tmp_path / "st", more, tmp_path / "e2.png")
    missing = "has no stored test predictions (test_predictions.pt)"
    assert note == (f"1 run(s) drawn; skipped: f1: FileNotFoundError: {tmp_path / 'st' / 'runs' / 'f1' / 'out'} "
                    f"{missing}; f2: FileNotFoundError: {tmp_path / 'st' / 'runs' / 'f2' / 'out'} {missing}")
    # render_report draws 3 examples by default, into a report folder whose parents do not exist yet
    from retina_unet.study.report import render_report

    out = tmp_path / "new" / "deeper" / "report"
    text = render_report(df, out, [], title="t", study_root=tmp_path / "st").read_text()
    assert "![examples](examples.png)\n\n1 run(s) drawn\n" in text
    from PIL import Image

    with Image.open(out / "examples.png") as im:
        assert im.size == (576, 200)  # 3 panels of 2.4 x 2.5 in at 80 dpi
    render_report(df, out, [], title="t", study_root=tmp_path / "st", n_examples=2)
    with Image.open(out / "examples.png") as im:
        assert im.size == (384, 200)  # n_examples reaches the figure
    # with result envelopes that carry two epochs or more: the learning curves section shows the figure
    envs = [_curve_envelope("donuts_shape", 2, "retina_net", 20, seed, [0.1, 0.2]) for seed in (0, 1)]
    text = render_report(df, out, [], title="t", envelopes=envs).read_text()
    assert "## Learning curves\n\n![learning curves](learning_curves.png)\n\n1 panel(s) (n_train 20), 2 run(s)\n\n" in text
    assert (out / "learning_curves.png").stat().st_size > 0


def test_rendered_report_of_no_runs(tmp_path):
    from retina_unet.study.report import render_report

    empty = _df([])
    readme = render_report(empty, tmp_path / "r", ["- h"], title="t")
    assert readme.read_text() == ("# Study `t`: test mAP vs training-set size\n\n_Generated by `python -m "
                                  "retina_unet.study report` from the result files; do not edit by hand._\n\n- h\n\n"
                                  "No finished runs yet.\n")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["README.md", "results.csv"]


def test_panels_go_by_dim_then_the_paper_task_order_then_name():
    from retina_unet.study.report.figures import _panels

    df = pd.DataFrame({"task": ["zeta", "circles_scale", "donuts_pattern", "donuts_shape", "alpha", "donuts_shape"],
                       "dim": [2, 2, 2, 2, 2, 3]})
    assert _panels(df) == [("donuts_shape", 2), ("donuts_pattern", 2), ("circles_scale", 2), ("alpha", 2),
                           ("zeta", 2), ("donuts_shape", 3)]
    assert _panels(df[df.task != "circles_scale"])[:3] == [("donuts_shape", 2), ("donuts_pattern", 2), ("alpha", 2)]
