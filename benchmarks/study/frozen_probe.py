"""Does a trained detector's backbone encode the donut class? A linear probe on its frozen features.

``hole_probe.py`` asks whether the backbone *can* learn the class when trained as a classifier. This
asks whether a backbone trained *as a detector* did: it loads a run's checkpoint, freezes it, takes
the feature vector of FPN level ``--level`` at the cell of each object's centre (whole objects, one
per patch, as in ``hole_probe.py``), fits a logistic regression on ``--n`` objects and reports its
accuracy on ``--n-test`` held-out objects (another data seed; chance 0.5). If the features separate
the classes but the detector's classifier does not, the classifier's read-out is what fails; if
they do not, the class never reached the backbone (docs/models.md, "3D Mask R-CNN")::

    python benchmarks/study/frozen_probe.py runs/3d/preset_rn runs/3d/preset_mr
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import toy_data
from benchmarks.study.hole_probe import object_patches
from retina_unet.training.checkpoint import load_checkpoint
from retina_unet.training.config import TrainConfig
from retina_unet.training.model import build_from_config


def load_backbone(run: Path) -> tuple[torch.nn.Module, dict, str]:
    """The backbone of ``run``'s best checkpoint (the first of its top-k), frozen, and its name."""
    result = json.loads((run / "result.json").read_text())
    name = result["top_k"][0]["path"]
    ckpt = load_checkpoint(run / name)
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = build_from_config(cfg, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    net = model.network if hasattr(model, "network") else model
    return net.backbone, net.backbone.strides, f"{cfg.model} ({name})"


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
    print(f"| run | model (checkpoint) | P{args.level} channels | probe accuracy: fitted / held-out |")
    print("|---|---|---|---|")
    for run in args.runs:
        backbone, strides, name = load_backbone(run)
        fa = centre_features(backbone, strides, args.level, xa, ca)
        fb = centre_features(backbone, strides, args.level, xb, cb)
        acc_a, acc_b = probe_accuracy(fa, ya, fb, yb)
        print(f"| {run} | {name} | {fa.shape[1]} | {acc_a:.3f} / {acc_b:.3f} |")


if __name__ == "__main__":
    main()
