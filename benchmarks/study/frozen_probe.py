"""Does a trained detector's backbone encode the donut class? A linear probe on its frozen features.

``hole_probe.py`` asks whether the backbone *can* learn the class when trained as a classifier. This
asks whether a backbone trained *as a detector* did: it loads a run's checkpoint, freezes it, takes
the feature vector of FPN level ``--level`` at the cell of each object's centre (whole objects, one
per patch, as in ``hole_probe.py``), fits a logistic regression on ``--n`` objects and reports its
accuracy on ``--n-test`` held-out objects (another data seed; chance 0.5). If the features separate
the classes but the detector's classifier does not, the classifier's read-out is what fails; if
they do not, the class never reached the backbone. For a two-stage model it also reports its box
head's class accuracy on the held-out objects' ground-truth boxes (docs/models.md, "3D Mask R-CNN")::

    python benchmarks/study/frozen_probe.py runs/3d/preset_rn runs/3d/preset_mr
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import toy_data
from benchmarks.study.hole_probe import object_boxes, object_patches
from retina_unet.rundir import RunDir


def load_best(run: Path):
    """``run``'s best kept epoch, loaded and checked by the run loader, in eval mode; and its name."""
    loaded = RunDir(run).load_models(ensemble=False)
    return loaded.models[0], f"{loaded.cfg.model} ({loaded.files[0].name})"


def backbone_of(model) -> torch.nn.Module:
    return (model.network if hasattr(model, "network") else model).backbone


@torch.no_grad()
def box_head_accuracy(model, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, radius: int,
                      batch: int = 25) -> float | None:
    """A two-stage model's box-head class accuracy on each patch's ground-truth box (None for the
    others): does the second stage read the class the backbone carries?"""
    if not hasattr(model, "box_head"):
        return None
    hits = 0
    for i in range(0, len(x), batch):
        feats = model.backbone(x[i:i + batch])
        boxes = list(object_boxes(c[i:i + batch], radius)[:, None])  # one box per patch
        logits, _ = model.box_head(model._pool(feats, boxes, model.cfg.box_pool_size))
        hits += int((logits[:, 1:].argmax(1) == y[i:i + batch]).sum())
    return hits / len(x)


@torch.no_grad()
def centre_features(backbone, strides, level: int, x: torch.Tensor, c: torch.Tensor, batch: int = 25) -> torch.Tensor:
    """``(N, C)``: level ``level``'s feature at each patch's object-centre cell."""
    stride = torch.tensor(strides[level])
    rows = []
    for i in range(0, len(x), batch):
        f = backbone(x[i:i + batch])[level].float()
        cell = torch.minimum(c[i:i + batch] // stride, torch.tensor(f.shape[2:]) - 1)
        rows.append(f[(torch.arange(f.shape[0]), slice(None), *cell.unbind(1))])
    return torch.cat(rows)


def probe_accuracy(f_train, y_train, f_test, y_test, weight_decay: float = 1e-3) -> tuple[float, float]:
    """Logistic regression on standardised features (L-BFGS, L2): (training, held-out) accuracy."""
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    lin = torch.nn.Linear(a.shape[1], 2).double()
    a, b = a.double(), b.double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(a), y_train) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (float((lin(a).argmax(1) == y_train).double().mean()),
                float((lin(b).argmax(1) == y_test).double().mean()))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (result.json + checkpoints)")
    p.add_argument("--task", default="donuts_shape")
    p.add_argument("--level", type=int, default=2, help="FPN level read at the centre cell")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--n", type=int, default=600, help="objects the probe is fitted on")
    p.add_argument("--n-test", type=int, default=400, help="held-out objects (another data seed)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    spec = toy_data.task_spec(args.task, 3)
    xa, ya, ca = object_patches(spec, args.n, args.patch, seed=101)
    xb, yb, cb = object_patches(spec, args.n_test, args.patch, seed=102)
    print(f"| run | model (checkpoint) | P{args.level} channels | probe accuracy: fitted / held-out "
          f"| box head on the held-out ground-truth boxes |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        model, name = load_best(run)
        backbone = backbone_of(model)
        fa = centre_features(backbone, backbone.strides, args.level, xa, ca)
        fb = centre_features(backbone, backbone.strides, args.level, xb, cb)
        acc_a, acc_b = probe_accuracy(fa, ya, fb, yb)
        head = box_head_accuracy(model, xb, yb, cb, spec.radii[0])
        print(f"| {run} | {name} | {fa.shape[1]} | {acc_a:.3f} / {acc_b:.3f} | {'-' if head is None else f'{head:.3f}'} |")

if __name__ == "__main__":
    main()
