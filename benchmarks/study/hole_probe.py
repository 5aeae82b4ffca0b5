"""Can a backbone learn the donut class at all? A linear read-out at the object's centre, trained.

The 3D detectors localise the toy balls but do not learn the class (the 27-voxel hole; docs/models.md,
"3D learning"). This probe takes the detectors' backbone (``ResNetFPN`` of the ``cpu`` model size, with
the settings given) and trains it, end to end with Adam, as a plain classifier: the feature vector of
one FPN level at the cell that holds the object's centre, then a linear layer, cross-entropy on the
object's class. Patches are cropped as in training (``patch`` per axis, the object inside), one object
per patch, ``--batch`` patches per step. No anchors, no sampling, no box loss: if the backbone cannot
learn the class here, no detection head on top of it will.

Prints, every ``--every`` steps, the running training accuracy and the accuracy on ``--n-test``
held-out objects (another data seed, never trained on; chance 0.5): with a few hundred training
objects seen dozens of times each, the training accuracy alone could be memorised noise. Example (the rows of docs/models.md)::

    python benchmarks/study/hole_probe.py --dim 3 --stem-kernel 7 --steps 2000
    python benchmarks/study/hole_probe.py --dim 3 --stem-kernel 3 --stem-stride 1 --level 2 --steps 1600

``--read`` chooses the read-out. ``centre`` (default) is the above. ``fc``, ``conv`` and ``fc_centre``
read the class as the two-stage models do: RoIAlign of the object's ground-truth box from its
assigned FPN level (the ``cpu`` model's pool size and level rule), then a ``BoxHead`` of that kind
(``ModelConfig.box_head``; two class logits of its three), the backbone initialised as the detectors
initialise it. Where ``centre`` learns and ``fc`` does not, the two-stage head is the blocker
(docs/models.md, "3D Mask R-CNN")::

    python benchmarks/study/hole_probe.py --dim 3 --stem-kernel 3 --stem-stride 1 --read fc --steps 1000 --every 200 --n 2000

``--contrast`` overrides the task's contrast (a diagnostic only: the study never changes a task).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import toy_data
from retina_unet.models import model_config
from retina_unet.models.config import BOX_HEADS
from retina_unet.models.detector import backbone_for
from retina_unet.models.roi_heads import BoxHead, multilevel_roi_align
from retina_unet.nn.backbone import init_weights


def object_patches(spec, n: int, patch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` patches ``(n, 1, *P)`` each holding one whole object, its class (0/1) and centre voxel."""
    rng = np.random.default_rng(seed)
    d = spec.dim
    images, labels, centres = [], [], []
    i = 0
    while len(images) < n:
        s = toy_data.generate_sample(spec, seed, i)
        i += 1
        box, label = np.asarray(s.boxes)[0], int(np.asarray(s.labels)[0])
        lo, hi = box[:d].astype(int), box[d:].astype(int)
        if np.any(hi - lo != 2 * spec.radii[0] - 1):
            continue  # cut by the border: its box centre is not the hole
        start = [int(rng.integers(max(0, h - patch), min(lo_, size - patch) + 1))
                 for lo_, h, size in zip(lo, hi, spec.shape, strict=True)]
        sl = tuple(slice(a, a + patch) for a in start)
        images.append(torch.from_numpy(np.ascontiguousarray(s.image[sl], dtype=np.float32))[None])
        labels.append(label - 1)
        centres.append((lo + hi) // 2 - np.array(start))
    return torch.stack(images), torch.tensor(labels), torch.from_numpy(np.stack(centres))


def object_boxes(centres: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, 2 * dim)`` boxes of :func:`object_patches`' whole objects from their centre voxels
    ``(N, dim)``: the generator's box of a ball of ``radius`` (``hi - lo = 2 * radius - 1``)."""
    return torch.cat([centres - radius + 1, centres + radius], 1).float()


class CentreProbe(nn.Module):
    """Backbone -> FPN level ``level`` -> feature at the centre cell -> linear (2 classes)."""

    def __init__(self, dim: int, level: int, **model_overrides):
        super().__init__()
        cfg = model_config(dim, "cpu", **model_overrides)
        self.backbone = backbone_for(cfg, min_level=min(level, 2))
        self.level = level
        self.stride = torch.tensor(self.backbone.strides[level])
        self.fc = nn.Linear(self.backbone.out_channels[level], 2)

    def forward(self, x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)[self.level]  # (B, C, *F)
        cell = torch.minimum(centres // self.stride, torch.tensor(f.shape[2:]) - 1)
        rows = f[(torch.arange(f.shape[0]), slice(None), *cell.unbind(1))]  # (B, C): each image's centre cell
        return self.fc(rows)


class RoIProbe(nn.Module):
    """Backbone -> RoIAlign of each object's box (``object_patches``' rule) -> ``BoxHead(kind)`` ->
    its two object-class logits: the two-stage models' class read-out, with no RPN or sampling."""

    def __init__(self, dim: int, kind: str, radius: int, **model_overrides):
        super().__init__()
        self.cfg = cfg = model_config(dim, "cpu", box_head=kind, **model_overrides)
        self.levels = tuple(sorted(cfg.detection_levels))
        self.backbone = backbone_for(cfg, min_level=self.levels[0])
        init_weights(self.backbone, cfg.init)
        self.head = BoxHead(dim, cfg.fpn_channels, cfg.box_pool_size, cfg.fc_channels, 2, kind, cfg.head_channels)
        self.radius = radius

    def forward(self, x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        boxes = object_boxes(centres, self.radius)
        pooled = multilevel_roi_align(self.backbone(x), list(boxes[:, None]), self.backbone.strides, self.levels,
                                      self.cfg.box_pool_size, self.cfg.roi_canonical_size, self.cfg.roi_canonical_level)
        return self.head(pooled)[0][:, 1:]  # the background logit dropped: one object per RoI


@torch.no_grad()
def held_out_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, batch: int = 50) -> float:
    """Accuracy of ``net`` on patches ``x`` (N, 1, *P) with classes ``y`` (N,) and centres ``c`` (N, dim)."""
    hits = sum(int((net(x[i:i + batch], c[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=3)
    ap.add_argument("--task", default="donuts_shape")
    ap.add_argument("--contrast", type=float, default=None, help="diagnostic override of the task's contrast")
    ap.add_argument("--stem-kernel", type=int, default=7)
    ap.add_argument("--stem-stride", type=int, default=2)
    ap.add_argument("--start-filters", type=int, default=None)
    ap.add_argument("--level", type=int, default=2, help="FPN level read at the centre (2 = P2)")
    ap.add_argument("--read", default="centre", choices=("centre", *BOX_HEADS),
                    help="centre: a linear layer on the centre cell; else a BoxHead of that kind on the RoI")
    ap.add_argument("--patch", type=int, default=None, help="patch side (default: the cpu preset's, 64 / 32)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=400, help="distinct training objects")
    ap.add_argument("--n-test", type=int, default=400, help="held-out objects (data seed + 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    overrides = {} if args.contrast is None else {"contrast": args.contrast}
    spec = toy_data.task_spec(args.task, args.dim, **overrides)
    patch = args.patch or (64 if args.dim == 2 else 32)
    x, y, c = object_patches(spec, args.n, patch, args.seed)
    xt, yt, ct = object_patches(spec, args.n_test, patch, args.seed + 1)
    model_overrides = {"stem_kernel": args.stem_kernel,
                       "strides": ((args.stem_stride,) * args.dim, 2, 2, 2, 2)}
    if args.start_filters:
        model_overrides["start_filters"] = args.start_filters
    torch.manual_seed(args.seed)
    if args.read == "centre":
        net: nn.Module = CentreProbe(args.dim, args.level, **model_overrides)
    else:
        net = RoIProbe(args.dim, args.read, int(spec.radii[0]), **model_overrides)
    opt = torch.optim.Adam(net.parameters(), args.lr)
    g = torch.Generator().manual_seed(args.seed + 1)
    hits, t0 = [], time.perf_counter()
    where = (f"P{args.level} (stride {net.stride.tolist()}) centre cell" if args.read == "centre"
             else f"BoxHead {args.read!r} on the RoI")
    print(f"# {args.task} {args.dim}D contrast {spec.contrast}: stem {args.stem_kernel}^{args.dim} "
          f"stride {args.stem_stride}, {where}, batch {args.batch}")
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(x), (args.batch,), generator=g)
        logits = net(x[idx], c[idx])
        loss = nn.functional.cross_entropy(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        hits.append((logits.argmax(1) == y[idx]).float().mean().item())
        if step % args.every == 0:
            print(f"step {step:5d}  train accuracy (last {args.every}) {np.mean(hits[-args.every:]):.3f}  "
                  f"held-out {held_out_accuracy(net, xt, yt, ct):.3f}  {time.perf_counter() - t0:.0f} s",
                  flush=True)


if __name__ == "__main__":
    main()
