"""Tiny overfit runs (slow): each model must learn to find a bright object on a handful of images."""

from __future__ import annotations

import pytest
import torch

from retina_unet.models import MODEL_NAMES, build_model, model_config
from retina_unet.ops.reference import box_iou_reference


def toy_batch(d: int, n: int = 4, size: int = 64, seed: int = 0):
    """Noisy images with one bright cube/square (class 1) or a cube with a dark core (class 2)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, *(size,) * d, generator=g) * 0.5
    targets = []
    for i in range(n):
        ext = 16 if d == 2 else 12
        lo = torch.randint(4, size - ext - 4, (d,), generator=g)
        sl = tuple(slice(int(v), int(v) + ext) for v in lo)
        label = 1 + i % 2
        mask = torch.zeros((size,) * d, dtype=torch.uint8)
        mask[sl] = label
        images[i][(slice(None),) + sl] += 1.0
        if label == 2:
            core = tuple(slice(int(v) + ext // 4, int(v) + ext - ext // 4) for v in lo)
            images[i][(slice(None),) + core] -= 1.0
        box = torch.cat([lo, lo + ext]).float()[None]
        targets.append({"boxes": box, "labels": torch.tensor([label]), "masks": mask})
    return images, targets


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_overfit(name, d):
    torch.manual_seed(0)
    size = 64 if d == 2 else 32
    cfg = model_config(
        d, "tiny", start_filters=8, fpn_channels=16, fine_channels=8, head_channels=16, fc_channels=64
    )
    model = build_model(name, cfg)
    images, targets = toy_batch(d, size=size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(150 if d == 2 else 100):
        model.train()
        loss = model.losses(images, targets)["loss"]
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    model.eval()
    hits = 0
    for p, t in zip(model.predict(images), targets, strict=True):
        if len(p["scores"]):
            iou = box_iou_reference(p["boxes"][:1], t["boxes"])[0, 0]
            hits += int(iou > 0.3 and int(p["labels"][0]) == int(t["labels"][0]))
    assert hits >= 3, f"{name} {d}D: top box right on {hits}/4 images"


def real_3d_toys(task: str = "donuts_shape", n: int = 4, seed: int = 7, size: int = 32):
    """``n`` real 3D toy volumes of the generator (radius-10 balls, hole 2, contrast 0.2 on uniform
    noise), in a ``size``^3 field of view (the cpu preset's patch size), classes alternating."""
    import toy_data

    spec = toy_data.task_spec(task, 3, size=size)
    images, targets, want, i = [], [], 1, 0
    while len(images) < n:
        s = toy_data.generate_sample(spec, seed, i)
        i += 1
        if len(s.labels) != 1 or int(s.labels[0]) != want:
            continue
        want = 3 - want
        images.append(torch.from_numpy(s.image)[None])
        targets.append(
            {
                "boxes": torch.from_numpy(s.boxes),
                "labels": torch.from_numpy(s.labels),
                "masks": torch.from_numpy(s.mask),
            }
        )
    return torch.stack(images), targets


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_overfit_real_3d_toys(name):
    """Each model, with the 3D ``cpu`` model settings, fits 4 real 3D donuts_shape volumes (32^3,
    contrast 0.2 against uniform noise, not synthetic high-contrast cubes) to mAP >= 0.9 on them."""
    from retina_unet.evaluation import evaluate_detections

    torch.manual_seed(0)
    model = build_model(name, model_config(3, "cpu"))
    images, targets = real_3d_toys()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(300):
        model.train()
        loss = model.losses(images, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    preds = model.predict(images)
    res = evaluate_detections(preds, targets, num_classes=2)
    assert res["mAP"] >= 0.9, f"{name} 3D: mAP {res['mAP']} on the 4 volumes it trained on"
