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


def _log_x(g: sns.FacetGrid, sizes: list[int]) -> None:
    for ax in g.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.minorticks_off()


def plot_scaling(df: pd.DataFrame, path: Path) -> Path:
    """Test mAP vs n_train (log x), a panel per task (and dim), a line per model: mean and 95% t-CI."""
    sns.set_theme(style="whitegrid", context="notebook")
    data = df.assign(task_dim=df["task"] + " " + df["dim"].astype(str) + "D")
    order = [m for m in MODEL_ORDER if m in set(data.model)] + sorted(set(data.model) - set(MODEL_ORDER))
    g = sns.relplot(data=data, x="n_train", y="map", hue="model", hue_order=order, col="task_dim", kind="line",
                    marker="o", errorbar=t_errorbar, err_style="band", height=3.6, aspect=1.2,
                    facet_kws={"sharey": True})
    _log_x(g, sorted(data.n_train.unique()))
    g.set_axis_labels("training images (n_train, log scale)", "test mAP (IoU > 0.1)")
    g.set_titles("{col_name}")
    g.figure.suptitle("mean over seeds, band = 95% t-interval", y=1.03, fontsize=10)
    g.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(g.figure)
    return path


def plot_paired(per_seed: pd.DataFrame, path: Path, a: str = "Retina U-Net", b: str = "Retina Net") -> Path:
    """Paired difference a - b per training size (per seed dots, mean and 95% t-CI bars)."""
    sns.set_theme(style="whitegrid", context="notebook")
    data = per_seed.assign(task_dim=per_seed["task"] + " " + per_seed["dim"].astype(str) + "D")
    g = sns.FacetGrid(data, col="task_dim", height=3.6, aspect=1.2, sharey=True)
    g.map_dataframe(sns.lineplot, x="n_train", y="diff", errorbar=t_errorbar, err_style="bars", marker="o",
                    color="C0", err_kws={"capsize": 4})
    g.map_dataframe(sns.scatterplot, x="n_train", y="diff", color="0.4", alpha=0.6, s=18)
    for ax in g.axes.flat:
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
    _log_x(g, sorted(data.n_train.unique()))
    g.set_axis_labels("training images (n_train, log scale)", f"mAP({a}) - mAP({b})")
    g.set_titles("{col_name}")
    g.figure.suptitle("paired by seed: mean, 95% t-interval, dots = seeds", y=1.03, fontsize=10)
    g.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(g.figure)
    return path


def _example_runs(df: pd.DataFrame) -> list[pd.Series]:
    """Per model: the seed-0 (lowest seed) run at the largest and the smallest training size."""
    picks = []
    for (task, _dim), tdf in df.groupby(["task", "dim"]):
        if task != "donuts_shape" and "donuts_shape" in set(df.task):
            continue
        for model in [m for m in MODEL_ORDER if m in set(tdf.model)] + sorted(set(tdf.model) - set(MODEL_ORDER)):
            mdf = tdf[(tdf.model == model) & (tdf.seed == tdf.seed.min())]
            for n in sorted({mdf.n_train.max(), mdf.n_train.min()}, reverse=True):
                picks.append(mdf[mdf.n_train == n].iloc[0])
        break  # one task is enough for a picture
    return picks


def predict_examples(study_root: Path, envelope: dict[str, Any], n: int) -> tuple[np.ndarray, list[dict], list[dict]]:
    """Re-run the best kept epoch of a finished run (no TTA) on the first ``n`` test images."""
    import torch

    import toy_data
    from retina_unet.rundir import RunDir

    run_dir = study_root / envelope["artifacts"] / "out"
    dataset_path = Path(envelope["result"]["dataset"])
    if not dataset_path.is_absolute():
        dataset_path = Path.cwd() / dataset_path
    models = RunDir(run_dir).load_models(ensemble=False, device="cpu").models
    test = toy_data.load_dataset(dataset_path, verify=False, splits=("test",)).split("test")
    images = np.asarray(test.images[:n], dtype=np.float32)
    x = torch.from_numpy(np.array(images if images.ndim == 4 else images[:, None]))  # a writable copy
    with torch.no_grad():
        preds = models[0].predict(x)
    gts = [{"boxes": np.asarray(test.boxes[i]).reshape(-1, 4), "labels": np.asarray(test.labels[i]).reshape(-1)}
           for i in range(n)]
    return images.reshape(n, *images.shape[-2:]), [{k: np.asarray(v) for k, v in p.items() if k != "seg"} for p in preds], gts


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


def plot_examples(study_root: Path, df: pd.DataFrame, path: Path, n: int = 3, score_floor: float = 0.1) -> tuple[Path | None, str]:
    """A grid: rows = (model, n_train), columns = the first ``n`` test images, GT dashed, predictions solid.

    Returns (path or None, a note saying what was drawn or why nothing was). 2D runs only.
    """
    rows = [r for r in _example_runs(df[df["dim"] == 2]) if r is not None]
    if not rows:
        return None, "no 2D runs to draw"
    drawn, failures = [], []
    for r in rows:
        env = json.loads((study_root / "results" / f"{r.run_id}.json").read_text())
        try:
            drawn.append((r, *predict_examples(study_root, env, n)))
        except Exception as exc:  # artefacts missing (e.g. Ray without a shared filesystem)
            failures.append(f"{r.run_id}: {type(exc).__name__}: {exc}")
    if not drawn:
        return None, "example predictions unavailable: " + "; ".join(failures)
    from toy_data.palette import GT_STYLE, PRED_STYLE, class_colour, legend

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
    fig.suptitle(f"crops around the object; best epoch, no TTA; top-3 predictions (score > {score_floor:g})\n"
                 f"{legend()}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
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
    g.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(g.figure)
    return path, (f"{len(panels)} panel(s) (n_train {', '.join(str(n) for n in sizes)}), "
                  f"{df.groupby(['model', 'n_train', 'seed', 'task_dim']).ngroups} run(s)")
