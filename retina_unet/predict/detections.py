"""``detections.csv`` / ``detections.json``: writing them, and reading them back for evaluation.

CSV: one row per detected box, columns ``image`` (file stem), ``class``, ``score``, the box in our
convention (``lo_0, lo_1[, lo_2], hi_0, hi_1[, hi_2]``) and, unless the chosen convention is
``ours``, the same box converted, in columns ``<convention>_<field>`` (e.g. ``xyxy_x1``). Images
without detections have no row (the JSON lists every image).

JSON: ``{"format", "checkpoint", "model", "spatial_dims", "num_classes", "convention": {name, doc,
columns}, "settings": {...}, "images": [{"image", "file", "shape", "detections": [{"class",
"score", "box", "box_converted"}]}]}``.

Scores and our boxes are the model's float32 values, written so that reading them back as float32
gives exactly the same numbers (the shortest decimal when it round-trips, else the exact value):
re-evaluating the files gives the same mAP as evaluating the predictions in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from retina_unet.predict.conventions import Convention

FORMAT = "retina_unet.detections/1"


def our_columns(spatial_dims: int) -> list[str]:
    return [f"lo_{k}" for k in range(spatial_dims)] + [f"hi_{k}" for k in range(spatial_dims)]


def f32_text(x: float) -> str:
    """A decimal for the float32 value ``x`` that parses back (via float64) to exactly ``x``."""
    v = np.float32(x)
    s = str(v)
    return s if np.float32(float(s)) == v else repr(float(v))


def _text(x: float) -> str:
    """The float32 form when ``x`` is a float32 value (reordered columns), else the exact float64."""
    return f32_text(x) if float(np.float32(x)) == x else repr(float(x))


def _f32(x: float) -> float:
    return float(f32_text(x))


def detection_records(stem: str, pred: dict, conv: Convention, score_threshold: float | None) -> list[dict]:
    """One dict per kept box of one image's prediction, highest score first.

    Args:
        pred: ``boxes (P, 2*D)``, ``scores (P,)``, ``labels (P,)`` (Predictor output, CPU or not).
        score_threshold: keep scores > this, compared in float32 as the evaluation does; None keeps all.
    """
    boxes = pred["boxes"].detach().cpu().float()
    scores = pred["scores"].detach().cpu().float()
    labels = pred["labels"].detach().cpu().long()
    if score_threshold is not None:
        keep = scores > torch.tensor(score_threshold, dtype=torch.float32)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = torch.argsort(-scores, stable=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    conv_boxes = conv.to(boxes.double()) if boxes.numel() else boxes.double()
    return [
        {
            "image": stem,
            "class": int(labels[i]),
            "score": _f32(scores[i]),
            "box": [_f32(v) for v in boxes[i].tolist()],
            "box_converted": [float(_text(v)) for v in conv_boxes[i].tolist()],
        }
        for i in range(len(scores))
    ]


def csv_text(records: Sequence[dict], spatial_dims: int, conv: Convention) -> str:
    """The CSV document (header + one row per record) as text."""
    conv_cols = [] if conv.name == "ours" else [f"{conv.name}_{c}" for c in conv.columns[spatial_dims]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "class", "score", *our_columns(spatial_dims), *conv_cols])
    for r in records:
        extra = [] if conv.name == "ours" else [_text(v) for v in r["box_converted"]]
        w.writerow([r["image"], r["class"], f32_text(r["score"]), *(f32_text(v) for v in r["box"]), *extra])
    return buf.getvalue()


def json_document(images: Sequence[dict], records: Sequence[dict], meta: dict, conv: Convention) -> dict:
    """The JSON document: ``meta`` fields, the convention, and every image with its detections.

    Args:
        images: one dict per input image (``image`` stem, ``file``, ``shape``), in input order.
        records: :func:`detection_records` of all images.
    """
    by_image: dict[str, list[dict]] = {}
    for r in records:
        by_image.setdefault(r["image"], []).append({k: v for k, v in r.items() if k != "image"})
    d = meta["spatial_dims"]
    return {
        "format": FORMAT,
        **meta,
        "convention": {
            "name": conv.name,
            "doc": conv.doc,
            "columns": list(conv.columns[d]),
            "ours": our_columns(d),
        },
        "images": [{**im, "detections": by_image.get(im["image"], [])} for im in images],
    }


def json_text(doc: dict) -> str:
    """The JSON document as text: metadata indented, one line per image."""
    head = json.dumps({**doc, "images": []}, indent=1)
    lines = ",\n  ".join(json.dumps(im) for im in doc["images"])
    return (
        head.replace('"images": []', '"images": [\n  ' + lines + "\n ]" if lines else '"images": []') + "\n"
    )


def _as_pred(boxes: list, scores: list, labels: list, spatial_dims: int) -> dict:
    return {
        "boxes": torch.tensor(
            np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * spatial_dims), dtype=torch.float32
        ),
        "scores": torch.tensor(np.asarray(scores, dtype=np.float64), dtype=torch.float32),
        "labels": torch.tensor(np.asarray(labels, dtype=np.int64)),
    }


def read_detections(path: str | Path, images: Sequence[str] | None = None) -> dict[str, dict]:
    """Read ``detections.csv`` or ``detections.json`` back into per-image predictions.

    Returns ``{stem: {"boxes": (P, 2*D) float32, "scores": (P,) float32, "labels": (P,) int64}}``
    in our convention. With ``images``, exactly those stems (empty predictions for images without
    rows; the CSV has no row for them).
    """
    path = Path(path)
    rows: dict[str, tuple[list, list, list]] = {}
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(
                f"{path}: not a detections file (format {doc.get('format')!r}, expected {FORMAT!r})"
            )
        d = int(doc["spatial_dims"])
        for im in doc["images"]:
            dets = im["detections"]
            rows[im["image"]] = (
                [x["box"] for x in dets],
                [x["score"] for x in dets],
                [x["class"] for x in dets],
            )
    else:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            d = 3 if "lo_2" in header else 2
            missing = [c for c in ["image", "class", "score", *our_columns(d)] if c not in header]
            if missing:
                raise ValueError(f"{path}: not a detections CSV: columns {missing} are missing")
            for r in reader:
                b, s, lab = rows.setdefault(r["image"], ([], [], []))
                b.append([float(r[c]) for c in our_columns(d)])
                s.append(float(r["score"]))
                lab.append(int(r["class"]))
    stems = list(rows) if images is None else list(images)
    return {k: _as_pred(*rows.get(k, ([], [], [])), spatial_dims=d) for k in stems}


def evaluate_detection_files(
    path: str | Path,
    ground_truth: dict,
    num_classes: int,
    iou_threshold: float = 0.1,
    score_threshold: float = 0.1,
) -> dict:
    """:func:`retina_unet.evaluation.evaluate_detections` of a detections file against ground truth.

    Args:
        ground_truth: ``{stem: {"boxes", "labels"}}`` (see :func:`retina_unet.predict.inputs.read_ground_truth`);
            its stems (in order) are the evaluated images.
    """
    from retina_unet.evaluation import evaluate_detections

    stems = list(ground_truth)
    preds = read_detections(path, stems)
    return evaluate_detections(
        [preds[s] for s in stems],
        [ground_truth[s] for s in stems],
        num_classes,
        iou_threshold,
        score_threshold,
    )
