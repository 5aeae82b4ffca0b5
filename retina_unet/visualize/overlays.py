"""Overlay PNGs: ground-truth and predicted boxes (class, score) and segmentation on 2D images and
3D volumes (matplotlib, Agg backend).

- 2D: one panel, the image with ground truth (solid, coloured by class, "gt c<k>"), predictions above
  the score threshold (dashed, coloured by class, "c<k> <score>") and the segmentation outline (orange:
  foreground probability 0.5, i.e. 1 - p(background) from the model's ``seg`` output, or the
  non-zero region of an integer class map).
- 3D ``(D, H, W)``: per object (ground-truth objects, or the top predictions when there is no
  ground truth; at most ``max_objects``) the axial slice (axis 0) through the box centre with the
  boxes that cross that slice, then one maximum-intensity projection along axis 0 with every box
  projected into axes (1, 2).

Colours and legend: ``toy_data.palette`` (the same in ``toy_data preview`` and the study report).

Sizes are fixed by the layout, not by the content: each panel is ``panel_px`` square (at least
``PANEL_PX``; :func:`draw_case` uses the image's in-plane size when larger, so a 320 x 320 input is
drawn at 320 x 320, never shrunk) under a ``LABEL_PX`` caption band, plus a ``HEADER_PX`` band for a
title (:func:`figure_size_px`), at ``DPI`` 80; labels are ``FONT_PT`` points (10 px). The toy images are noise, which compresses badly, so PNGs are quantised to a 64-colour
fixed palette (64 grey levels + the annotation colours) before saving.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retina_unet.atomic_io import write_bytes_atomic
from toy_data.palette import (
    CLASS_COLOURS,
    GT_STYLE,
    MASK_COLOUR,
    OTHER_COLOUR,
    PRED_STYLE,
    class_colour,
    legend,
)

DPI = 80
PANEL_PX = 240  # the smallest panel; larger images get their own size
LABEL_PX = 16
HEADER_PX = 28
FONT_PT = 9  # 10 px at 80 dpi: legible box labels and captions
PALETTE_COLOURS = 64
SEG_COLOUR = MASK_COLOUR
LEGEND = legend()


@dataclass
class Panel:
    """One 2D panel: ``image (H, W)``, 2D ``boxes`` as (lo_0, lo_1, hi_0, hi_1, kind, label) with kind
    "gt" or the predicted class, an optional ``contour (H, W)`` field drawn at 0.5, a caption, and
    an optional ``window`` (pixel coordinates) that the panel shows instead of the whole image."""

    image: np.ndarray
    caption: str = ""
    boxes: list[tuple] = field(default_factory=list)
    contour: np.ndarray | None = None
    window: tuple[float, float, float, float] | None = None  # (lo_0, lo_1, hi_0, hi_1) to zoom to


def figure_size_px(n_rows: int, n_cols: int, title: bool = True, panel_px: int = PANEL_PX) -> tuple[int, int]:
    """(width, height) in pixels of a figure of ``n_rows`` x ``n_cols`` panels of ``panel_px``."""
    return n_cols * panel_px, n_rows * (panel_px + LABEL_PX) + (HEADER_PX if title else 0)


def panel_size_px(panels: Sequence[Panel]) -> int:
    """The panel size that shows every panel at least at its own resolution (>= ``PANEL_PX``)."""
    sides = [PANEL_PX]
    for p in panels:
        lo0, lo1, hi0, hi1 = p.window or (0, 0, *p.image.shape)
        sides.append(int(np.ceil(max(hi0 - lo0, hi1 - lo1))))
    return max(sides)


# --- inputs ---------------------------------------------------------------------------------------
def _as_image(image, spatial_dims: int, name: str = "image") -> np.ndarray:
    """``(*S)`` or ``(C, *S)`` -> float ``(*S)`` (channel 0 is shown)."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a float or integer array, got dtype {arr.dtype}")
    if arr.ndim == spatial_dims + 1:
        arr = arr[0]
    if arr.ndim != spatial_dims or min(arr.shape, default=0) < 1:
        layout = "(H, W) or (C, H, W)" if spatial_dims == 2 else "(D, H, W) or (C, D, H, W)"
        raise ValueError(f"{name}: expected a {spatial_dims}D image {layout}, got shape {tuple(arr.shape)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr.astype(np.float32, copy=False)


def _as_boxes(entry: dict | None, spatial_dims: int, name: str, with_scores: bool):
    """(boxes (N, 2*D) float64, labels (N,) int, scores (N,) or None) from a dict; empty when None."""
    if entry is None:
        return np.zeros((0, 2 * spatial_dims)), np.zeros(0, int), np.zeros(0) if with_scores else None

    def arr(key):
        if key not in entry:
            raise ValueError(
                f"{name}: missing {key!r}; expected a dict with 'boxes' and 'labels'"
                + (" and 'scores'" if with_scores else "")
            )
        v = entry[key]
        return np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)

    labels = arr("labels").reshape(-1).astype(int)
    boxes = arr("boxes").astype(np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 2 * spatial_dims)
    if boxes.ndim != 2 or boxes.shape != (len(labels), 2 * spatial_dims):
        raise ValueError(
            f"{name}: 'boxes' must have shape ({len(labels)}, {2 * spatial_dims}) for {spatial_dims}D, "
            f"got {tuple(boxes.shape)}"
        )
    if not np.isfinite(boxes).all():
        raise ValueError(f"{name}: 'boxes' contains NaN or inf")
    scores = arr("scores").reshape(-1).astype(np.float64) if with_scores else None
    if scores is not None and scores.shape != labels.shape:
        raise ValueError(f"{name}: 'scores' must have shape ({len(labels)},), got {scores.shape}")
    return boxes, labels, scores


def _seg_field(seg, spatial: tuple[int, ...]) -> np.ndarray | None:
    """Foreground field ``(*S)`` in [0, 1] from ``(C+1, *S)`` probabilities or an integer class map."""
    if seg is None:
        return None
    s = np.asarray(seg.detach().cpu().float() if hasattr(seg, "detach") else seg)
    if s.shape == spatial and s.dtype.kind in "iub":
        return (s > 0).astype(np.float32)
    if s.ndim == len(spatial) + 1 and s.shape[1:] == spatial and s.shape[0] >= 2:
        return (1.0 - s[0]).astype(np.float32)
    raise ValueError(
        f"seg: expected (C+1, *S) class probabilities or an integer class map (*S) with S = {spatial}, "
        f"got shape {s.shape} dtype {s.dtype}"
    )


# --- panels ---------------------------------------------------------------------------------------
def _panel_boxes(gt, pred, axes: Sequence[int], d: int, keep_gt=None, keep_pred=None) -> list[tuple]:
    """2D boxes on the in-plane ``axes`` (two of them) for the selected gt / predictions."""
    out = []
    (gb, gl, _), (pb, pl, ps) = gt, pred
    a0, a1 = axes
    for i in range(len(gl)) if keep_gt is None else np.flatnonzero(keep_gt):
        out.append((gb[i, a0], gb[i, a1], gb[i, d + a0], gb[i, d + a1], "gt", f"gt c{gl[i]}"))
    for i in range(len(pl)) if keep_pred is None else np.flatnonzero(keep_pred):
        out.append((pb[i, a0], pb[i, a1], pb[i, d + a0], pb[i, d + a1], int(pl[i]), f"c{pl[i]} {ps[i]:.2f}"))
    return out


def _select_predictions(pred, score_threshold: float, max_boxes: int):
    boxes, labels, scores = pred
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] > score_threshold][:max_boxes]
    return boxes[order], labels[order], scores[order]


def case_panels(
    image,
    spatial_dims: int,
    gt: dict | None = None,
    pred: dict | None = None,
    seg=None,
    score_threshold: float = 0.1,
    max_boxes: int = 10,
    max_objects: int = 4,
    focus_px: int | None = None,
) -> list[Panel]:
    """The panels of one case (see the module doc); arguments as :func:`draw_case`.

    ``focus_px``: zoom every panel to a square window of at least this many pixels (and 1.6 times
    the object's extent) around the first ground-truth object (else the top prediction).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    img = _as_image(image, spatial_dims)
    g = _as_boxes(gt, spatial_dims, "gt", with_scores=False)
    p = _select_predictions(
        _as_boxes(pred, spatial_dims, "pred", with_scores=True), score_threshold, max_boxes
    )
    fg = _seg_field(seg, img.shape)
    centres = g[0] if len(g[1]) else p[0]
    if spatial_dims == 2:
        win = _window(centres[0], (0, 1), img.shape, focus_px) if focus_px and len(centres) else None
        return [Panel(img, "", _panel_boxes(g, p, (0, 1), 2), fg, win)]
    d = 3
    panels = []
    for k, box in enumerate(centres[:max_objects]):
        z = int(np.clip(np.floor((box[0] + box[d]) / 2), 0, img.shape[0] - 1))
        boxes = _panel_boxes(g, p, (1, 2), d, _crosses(g[0], z), _crosses(p[0], z))
        what = "object" if len(g[1]) else "detection"
        win = _window(box, (1, 2), img.shape[1:], focus_px) if focus_px else None
        panels.append(Panel(img[z], f"{what} {k + 1}: slice {z}", boxes, None if fg is None else fg[z], win))
    if not panels:  # nothing to centre on: the middle slice
        z = img.shape[0] // 2
        panels.append(Panel(img[z], f"slice {z}", [], None if fg is None else fg[z]))
    mip_fg = None if fg is None else fg.max(axis=0)
    win = _window(centres[0], (1, 2), img.shape[1:], focus_px) if focus_px and len(centres) else None
    panels.append(
        Panel(img.max(axis=0), "max projection (axis 0)", _panel_boxes(g, p, (1, 2), d), mip_fg, win)
    )
    return panels


def _crosses(boxes: np.ndarray, z: int) -> np.ndarray:
    """``(N,)`` bool: which 3D boxes ``(N, 6)`` cover part of slice z (voxels [z, z + 1) on axis 0)."""
    return (boxes[:, 0] < z + 1) & (boxes[:, 3] > z)


def _window(box: np.ndarray, axes: tuple[int, int], size: tuple[int, ...], focus_px: int):
    """A square window (lo_0, lo_1, hi_0, hi_1) around ``box`` on ``axes``, inside the image if it fits."""
    d = len(box) // 2
    lo, hi = box[list(axes)], box[[d + a for a in axes]]
    side = min(max(float(focus_px), 1.6 * float((hi - lo).max())), float(max(size)))  # never beyond the image
    start = (lo + hi) / 2 - side / 2
    start = np.clip(start, 0.0, np.maximum(np.asarray(size, float) - side, 0.0))
    return (start[0], start[1], start[0] + side, start[1] + side)


# --- rendering ------------------------------------------------------------------------------------
def _draw_panel(ax, panel: Panel) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(panel.image, cmap="gray", interpolation="nearest")
    if panel.contour is not None and panel.contour.max() > 0.5 and panel.contour.min() < 0.5:
        ax.contour(panel.contour, levels=[0.5], colors=SEG_COLOUR, linewidths=0.8)
    for lo0, lo1, hi0, hi1, kind, label in panel.boxes:
        colour = class_colour(_gt_class(label)) if kind == "gt" else class_colour(kind)
        # pixel k is drawn over [k - 0.5, k + 0.5]; a box [lo, hi) spans lo - 0.5 .. hi - 0.5
        ax.add_patch(
            Rectangle(
                (lo1 - 0.5, lo0 - 0.5),
                hi1 - lo1,
                hi0 - lo0,
                fill=False,
                edgecolor=colour,
                linewidth=1.2,
                linestyle=GT_STYLE if kind == "gt" else PRED_STYLE,
            )
        )
        y = hi0 - 0.5 if kind == "gt" else lo0 - 0.5
        ax.text(
            lo1 - 0.5,
            y,
            label,
            color=colour,
            fontsize=FONT_PT,
            va="top" if kind == "gt" else "bottom",
            clip_on=True,
            bbox={"facecolor": "black", "alpha": 0.7, "pad": 1, "linewidth": 0},  # readable over noise
        )
    lo0, lo1, hi0, hi1 = panel.window or (0, 0, *panel.image.shape)
    ax.set_xlim(lo1 - 0.5, hi1 - 0.5)
    ax.set_ylim(hi0 - 0.5, lo0 - 0.5)
    ax.set_axis_off()


def _gt_class(label: str) -> int:
    """The class of a ground-truth box from its label "gt c<k>"."""
    try:
        return int(label.rsplit("c", 1)[1])
    except (IndexError, ValueError):
        return 0


def render_png(rows: Sequence[Sequence[Panel | None]], title: str = "", panel_px: int = PANEL_PX) -> bytes:
    """PNG bytes of a grid of panels (``None`` = blank); size :func:`figure_size_px` with ``panel_px``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n_rows, n_cols = len(rows), max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("rows: expected at least one panel")
    w, h = figure_size_px(n_rows, n_cols, bool(title), panel_px)
    fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    try:
        top = h - (HEADER_PX if title else 0)
        if title:
            fig.text(0.5, 1 - HEADER_PX / 2 / h, title, ha="center", va="center", fontsize=FONT_PT, wrap=True)
        for r, row in enumerate(rows):
            y0 = top - (r + 1) * (panel_px + LABEL_PX)
            for c, panel in enumerate(row):
                if panel is None:
                    continue
                ax = fig.add_axes((c * panel_px / w, y0 / h, panel_px / w, panel_px / h))
                _draw_panel(ax, panel)
                fig.text(
                    (c + 0.5) * panel_px / w,
                    (y0 + panel_px + LABEL_PX / 2) / h,
                    panel.caption,
                    ha="center",
                    va="center",
                    fontsize=FONT_PT,
                )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    finally:
        plt.close(fig)
    buf.seek(0)
    small = io.BytesIO()
    rgb = Image.open(buf).convert("RGB")
    rgb.quantize(palette=_palette(), dither=Image.Dither.NONE).save(small, format="PNG", optimize=True)
    return small.getvalue()


def _palette():
    """A fixed palette: ``PALETTE_COLOURS`` grey levels plus the annotation colours (an adaptive
    palette would spend its entries on the grey noise and map the thin coloured lines to grey)."""
    from matplotlib.colors import to_rgb
    from PIL import Image

    greys = [round(255 * i / (PALETTE_COLOURS - 1)) for i in range(PALETTE_COLOURS)]
    colours = [SEG_COLOUR, OTHER_COLOUR, *CLASS_COLOURS.values()]
    entries = [(g, g, g) for g in greys] + [tuple(round(255 * c) for c in to_rgb(x)) for x in colours]
    flat = [v for e in entries for v in e]
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat + flat[-3:] * (256 - len(entries)))
    return pal


def draw_case(
    image,
    path: str | Path,
    spatial_dims: int,
    gt: dict | None = None,
    pred: dict | None = None,
    seg=None,
    title: str = "",
    score_threshold: float = 0.1,
    max_boxes: int = 10,
    max_objects: int = 4,
) -> Path:
    """Write the overlay PNG of one case to ``path`` (atomically).

    Args:
        image: ``(*S)`` or ``(C, *S)`` array or tensor, ``len(S) == spatial_dims`` (channel 0 shown).
        spatial_dims: 2 (one panel) or 3 (a slice per object + a maximum projection).
        gt: ``{"boxes": (G, 2*D), "labels": (G,)}`` in our convention, or None.
        pred: ``{"boxes": (P, 2*D), "scores": (P,), "labels": (P,)}``, or None; boxes with score
            <= ``score_threshold`` are not drawn, at most ``max_boxes`` (highest scores).
        seg: ``(C+1, *S)`` class probabilities (the model's / Predictor's ``seg``) or an integer
            class map ``(*S)``, or None.
        max_objects: 3D: at most this many per-object slices.

    Returns:
        ``path``. Its size is :func:`figure_size_px` ``(1, n_panels, title, panel_size_px(panels))``
        (panels at least at the image's resolution), where a 2D case shows ``title`` as its caption
        (no header band) and a 3D case in a header band.
    """
    panels = case_panels(image, spatial_dims, gt, pred, seg, score_threshold, max_boxes, max_objects)
    if len(panels) == 1:  # 2D: the title is the caption, no header band
        panels[0].caption, title = title, ""
    return write_bytes_atomic(path, render_png([panels], title, panel_size_px(panels)))
