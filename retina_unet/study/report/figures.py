"""seaborn figures of a study: scaling curves, paired differences, example predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from retina_unet.study.report.tables import t_errorbar  # noqa: E402

MODEL_ORDER = ("retina_unet", "retina_net", "ufrcnn_plus", "faster_rcnn_plus", "mask_rcnn", "detunet")
# Fig. 5 styling: colour = model, solid = trained with segmentation supervision, marker = stages.
# One colour per model (seaborn's colour-blind palette), distinct from the class colours of
# toy_data.palette, which the example panels use.
MODEL_COLOURS = dict(zip(MODEL_ORDER, sns.color_palette("colorblind", len(MODEL_ORDER)), strict=True))
SEG_SUPERVISED = frozenset({"retina_unet", "ufrcnn_plus", "detunet"})
TWO_STAGE_MODELS = frozenset({"mask_rcnn", "faster_rcnn_plus", "ufrcnn_plus"})
PNG_METADATA = {"Software": None}  # no version string: regenerating a report gives identical files


def _models(models) -> list[str]:
    present = set(models)
    return [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))


def _log_x(axes, sizes: list[int]) -> None:
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.minorticks_off()


def _panels(df: pd.DataFrame) -> list[tuple[str, int]]:
    order = {"donuts_shape": 0, "donuts_pattern": 1, "circles_scale": 2}
    keys = {(str(t), int(d)) for t, d in df[["task", "dim"]].drop_duplicates().itertuples(index=False)}
    return sorted(keys, key=lambda k: (k[1], order.get(k[0], 9), k[0]))


def plot_scaling(df: pd.DataFrame, path: Path) -> Path:
    """The paper's Fig. 5: test mAP vs n_train (log x), one panel per task (and dim), one line per model
    (mean over seeds, band = 95% t-interval). Colour = model; solid = segmentation-supervised, dashed =
    not; circle = one-stage, square = two-stage."""
    sns.set_theme(style="whitegrid", context="notebook")
    panels = _panels(df)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, (task, dim) in zip(axes[0], panels, strict=True):
        tdf = df[(df.task == task) & (df.dim == dim)]
        for model in _models(tdf.model):
            rows = []
            for n, g in tdf[tdf.model == model].groupby("n_train"):
                lo, hi = t_errorbar(g["map"].to_numpy())
                rows.append((n, g["map"].mean(), lo, hi))
            n, mean, lo, hi = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
            colour = MODEL_COLOURS.get(model, "0.3")
            ax.plot(n, mean, color=colour, ls="-" if model in SEG_SUPERVISED else "--",
                    marker="s" if model in TWO_STAGE_MODELS else "o", label=model)
            ok = ~np.isnan(lo)
            if ok.any():
                ax.fill_between(n[ok], lo[ok], hi[ok], color=colour, alpha=0.15, lw=0)
        ax.set_title(f"{task} {dim}D")
        ax.set_xlabel("training images (n_train, log scale)")
        _log_x([ax], sorted(int(v) for v in tdf.n_train.unique()))
    axes[0][0].set_ylabel("test mAP (IoU > 0.1)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
               title="solid: seg-supervised\ndashed: not\no one-stage, s two-stage", title_fontsize=7)
    fig.suptitle("mean over seeds, band = 95% t-interval", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    return path


def plot_paired(per_seed: pd.DataFrame, path: Path) -> Path:
    """Paired differences per task: one colour per comparison (``per_seed`` columns task, dim, n_train,
    seed, diff, comparison); mean with 95% t-interval bars, dots = seeds."""
    sns.set_theme(style="whitegrid", context="notebook")
    panels = _panels(per_seed)
    comparisons = list(dict.fromkeys(per_seed.comparison))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, (task, dim) in zip(axes[0], panels, strict=True):
        tdf = per_seed[(per_seed.task == task) & (per_seed.dim == dim)]
        sizes = sorted(int(v) for v in tdf.n_train.unique())
        for i, comp in enumerate(comparisons):
            c = tdf[tdf.comparison == comp]
            if c.empty:
                continue
            shift = 1.0 + 0.06 * (i - (len(comparisons) - 1) / 2)  # side by side on the log axis
            rows = [(n, g["diff"].mean(), *t_errorbar(g["diff"].to_numpy())) for n, g in c.groupby("n_train")]
            n, mean, lo, hi = (np.array(v, dtype=float) for v in zip(*rows, strict=True))
            err = np.vstack([mean - np.nan_to_num(lo, nan=mean), np.nan_to_num(hi, nan=mean) - mean])
            ax.errorbar(n * shift, mean, yerr=err, color=f"C{i}", marker="o", capsize=3, label=comp)
            ax.scatter(c.n_train.to_numpy() * shift, c["diff"], color=f"C{i}", alpha=0.4, s=12)
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
        ax.set_title(f"{task} {dim}D")
        ax.set_xlabel("training images (n_train, log scale)")
        _log_x([ax], sizes)
    axes[0][0].set_ylabel("paired mAP difference")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("paired by seed: mean, 95% t-interval, dots = seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    return path


def _example_runs(df: pd.DataFrame) -> list[pd.Series]:
    """Per model: its lowest-seed run at the largest and the smallest training size (the lowest seed
    of that model: another model's seed-0 run may have failed or not be in the grid yet)."""
    picks = []
    for (task, _dim), tdf in df.groupby(["task", "dim"]):
        if task != "donuts_shape" and "donuts_shape" in set(df.task):
            continue
        for model in [m for m in MODEL_ORDER if m in set(tdf.model)] + sorted(set(tdf.model) - set(MODEL_ORDER)):
            mdf = tdf[tdf.model == model]
            mdf = mdf[mdf.seed == mdf.seed.min()]
            for n in sorted({mdf.n_train.max(), mdf.n_train.min()}, reverse=True):
                picks.append(mdf[mdf.n_train == n].iloc[0])
        break  # one task is enough for a picture
    return picks


def stored_examples(study_root: Path, envelope: dict[str, Any], n: int) -> tuple[np.ndarray, list[dict], list[dict]]:
    """The first ``n`` test images of a finished run with the predictions the run stored
    (``<run>/out/test_predictions.pt``, written by ``train_and_evaluate``); no model is run.

    Read through the one run-folder loader (``retina_unet.rundir.RunDir``).
    Returns (images (n, H, W) float32, predictions [n] {boxes (P, 4), scores (P,), labels (P,)},
    targets [n] {boxes (G, 4), labels (G,)}), numpy arrays, boxes (y0, x0, y1, x1).
    """
    import toy_data
    from retina_unet.rundir import RunDir

    run_dir = study_root / envelope["artifacts"] / "out"
    stored = RunDir(run_dir).stored_predictions()
    if stored is None:
        raise FileNotFoundError(f"{run_dir} has no stored test predictions (test_predictions.pt)")
    n = min(n, int(stored["n_images"]))
    dataset_path = Path(envelope["result"]["dataset"])
    if not dataset_path.is_absolute():
        dataset_path = Path.cwd() / dataset_path
    split = stored["split"]
    test = toy_data.load_dataset(dataset_path, verify=False, splits=(split,)).split(split)
    images = np.asarray(test.images[:n], dtype=np.float32)

    def plain(d: dict, keys) -> dict:
        return {k: np.asarray(d[k]) for k in keys}

    preds = [plain(p, ("boxes", "scores", "labels")) for p in stored["predictions"][:n]]
    gts = [plain(t, ("boxes", "labels")) for t in stored["targets"][:n]]
    return images.reshape(n, *images.shape[-2:]), preds, gts


def _draw_box(ax, box, color, offset=(0, 0), ls="-", lw=1.5) -> None:
    y0, x0, y1, x1 = (float(v) for v in box)
    y0, y1, x0, x1 = y0 - offset[0], y1 - offset[0], x0 - offset[1], x1 - offset[1]
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, ls=ls, lw=lw,
                               clip_on=True))


def _window(image: np.ndarray, gt_box: np.ndarray, min_size: int = 96) -> tuple[int, int, int]:
    """(top, left, size) of a square crop around the ground-truth object (objects are small at 320^2)."""
    h, w = image.shape
    y0, x0, y1, x1 = (float(v) for v in gt_box)
    size = int(min(h, w, max(min_size, 3 * max(y1 - y0, x1 - x0))))
    top = int(np.clip((y0 + y1) / 2 - size / 2, 0, h - size))
    left = int(np.clip((x0 + x1) / 2 - size / 2, 0, w - size))
    return top, left, size


def _save_palette_png(fig, path: Path, dpi: int) -> Path:
    """``fig`` as a 256-colour PNG, atomically: the toy images' noise makes an RGBA PNG of the
    example grid ~1.5 MB; a palette without dithering (deterministic) keeps it under a third."""
    import io

    from PIL import Image

    from retina_unet.atomic_io import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png", metadata=PNG_METADATA)
    buf.seek(0)
    out = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return write_bytes_atomic(path, out.getvalue())


def plot_examples(study_root: Path, df: pd.DataFrame, path: Path, n: int = 3, score_floor: float = 0.1) -> tuple[Path | None, str]:
    """A grid: rows = (model, n_train), columns = the first ``n`` test images, GT solid, predictions dashed
    (``toy_data.palette.GT_STYLE`` / ``PRED_STYLE``).

    Returns (path or None, a note saying what was drawn or why nothing was). 2D runs only.
    """
    rows = [r for r in _example_runs(df[df["dim"] == 2]) if r is not None]
    if not rows:
        return None, "no 2D runs to draw"
    drawn, failures = [], []
    for r in rows:
        env = json.loads((study_root / "results" / f"{r.run_id}.json").read_text())
        try:
            drawn.append((r, *stored_examples(study_root, env, n)))
        except Exception as exc:  # artefacts missing (e.g. Ray without a shared filesystem)
            failures.append(f"{r.run_id}: {type(exc).__name__}: {exc}")
    if not drawn:
        return None, "example predictions unavailable: " + "; ".join(failures)
    from toy_data.palette import GT_STYLE, PRED_STYLE, class_colour, legend

    n = min(len(images) for _, images, _, _ in drawn)
    fig, axes = plt.subplots(len(drawn), n, figsize=(2.4 * n, 2.5 * len(drawn)), squeeze=False)
    for i, (r, images, preds, gts) in enumerate(drawn):
        for j in range(n):
            ax = axes[i, j]
            top, left, size = _window(images[j], gts[j]["boxes"][0])
            ax.imshow(images[j][top:top + size, left:left + size], cmap="gray", vmin=0, vmax=1.2)
            for b, lab in zip(gts[j]["boxes"], gts[j]["labels"], strict=True):
                _draw_box(ax, b, class_colour(lab), (top, left), ls=GT_STYLE, lw=1.0)
            p = preds[j]
            order = np.argsort(-p["scores"], kind="stable")
            keep = [k for k in order if p["scores"][k] > score_floor][:3]
            for k in keep:
                color = class_colour(p["labels"][k])
                _draw_box(ax, p["boxes"][k], color, (top, left), ls=PRED_STYLE)
                y0, x0 = float(p["boxes"][k][0]) - top, float(p["boxes"][k][1]) - left
                ax.text(x0, y0 - 2, f"c{int(p['labels'][k])} {p['scores'][k]:.2f}", color=color, fontsize=7,
                        clip_on=True)
            ax.set_xlim(-0.5, size - 0.5)
            ax.set_ylim(size - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{r.model}\nn={r.n_train}", fontsize=8)
            if i == 0:
                ax.set_title(f"test #{j} (GT class {int(gts[j]['labels'][0])})", fontsize=8)
    fig.suptitle(f"crops around the object; the run's stored test predictions; top-3 predictions "
                 f"(score > {score_floor:g})\n{legend()}", fontsize=8)
    fig.tight_layout()
    _save_palette_png(fig, path, dpi=80)
    plt.close(fig)
    note = f"{len(drawn)} run(s) drawn" + (f"; skipped: {'; '.join(failures)}" if failures else "")
    return path, note


def curve_rows(envelopes) -> pd.DataFrame:
    """Tidy per-epoch rows (task_dim, model, n_train, seed, epoch, val_mAP, loss) from the result files'
    ``curve`` field; empty when no result has one."""
    rows = []
    for env in envelopes:
        spec, curve = env["spec"], env["result"].get("curve") or []
        for rec in curve:
            rows.append({"task_dim": f"{spec['task']} {int(spec['dim'])}D", "model": spec["model"],
                         "n_train": int(spec["n_train"]), "seed": int(spec["seed"]), "epoch": rec.get("epoch"),
                         "val_mAP": rec.get("val_mAP"), "loss": rec.get("loss")})
    return pd.DataFrame(rows, columns=["task_dim", "model", "n_train", "seed", "epoch", "val_mAP", "loss"])


def plot_learning_curves(envelopes, path: Path) -> tuple[Path | None, str]:
    """Validation mAP per epoch, mean over seeds (band = 95% t-interval), a line per model; a panel per
    task and every training size (none left out). Returns (path or None, a note)."""
    df = curve_rows(envelopes).dropna(subset=["epoch", "val_mAP"])
    if df.empty or df["epoch"].nunique() < 2:
        return None, "no learning curves (the result files carry fewer than two epochs)"
    sizes = sorted(df.n_train.unique(), reverse=True)
    df = df.assign(panel=lambda d: d.task_dim + ", n_train=" + d.n_train.astype(str))
    panels = [f"{t}, n_train={n}" for t in sorted(df.task_dim.unique()) for n in sizes
              if ((df.task_dim == t) & (df.n_train == n)).any()]
    order = [m for m in MODEL_ORDER if m in set(df.model)] + sorted(set(df.model) - set(MODEL_ORDER))
    sns.set_theme(style="whitegrid", context="notebook")
    g = sns.relplot(data=df, x="epoch", y="val_mAP", hue="model", hue_order=order, col="panel", col_order=panels,
                    col_wrap=min(len(panels), 4), kind="line", errorbar=t_errorbar, height=2.6, aspect=1.2,
                    facet_kws={"sharey": True})
    g.set_axis_labels("epoch", "validation mAP")
    g.set_titles("{col_name}", size=8)
    g.figure.suptitle("learning curves: mean over seeds, band = 95% t-interval", y=1.03, fontsize=9)
    g.savefig(path, dpi=80, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(g.figure)
    return path, (f"{len(panels)} panel(s) (n_train {', '.join(str(n) for n in sizes)}), "
                  f"{df.groupby(['model', 'n_train', 'seed', 'task_dim']).ngroups} run(s)")
