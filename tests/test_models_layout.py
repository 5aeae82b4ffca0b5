"""Speed settings that must not change what a model computes: the channels-last layout, and the cap
on the mask head's RoIs (which changes only how many positives train the mask head)."""

from __future__ import annotations

import pytest
import torch

from retina_unet.models import MODEL_NAMES, build_model, model_config
from retina_unet.models.detector import channels_last_format


def _batch(d: int):
    torch.manual_seed(0)
    size = (64, 64) if d == 2 else (32, 32, 32)
    images = torch.rand(2, 1, *size)
    targets = []
    for i in range(2):
        masks = torch.zeros(size, dtype=torch.uint8)
        lo, hi = 8 + 4 * i, 28 + 4 * i
        masks[(slice(lo, hi),) * d] = i + 1
        targets.append({"boxes": torch.tensor([[lo] * d + [hi] * d], dtype=torch.float32),
                        "labels": torch.tensor([i + 1]), "masks": masks})
    return images, targets


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("d", [2, 3])
def test_channels_last_computes_the_same_losses_and_gradients(name, d):
    """Same initial weights and batch: channels-last (NHWC / NDHWC) and contiguous models agree to
    float32 rounding in every loss term and every gradient, and the weights are really channels-last."""
    images, targets = _batch(d)
    out = {}
    for cl in (False, True):
        torch.manual_seed(1)
        model = build_model(name, model_config(d, "tiny", channels_last=cl))
        if cl:
            fmt = channels_last_format(d)
            convs = [p for p in model.parameters() if p.dim() == d + 2 and p.shape[1] > 1 and p.shape[2] > 1]
            assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
            assert model.pad(images).is_contiguous(memory_format=fmt)
        torch.manual_seed(2)  # the losses' sampling draws the same anchors / RoIs
        losses = model.losses(images, targets)
        losses["loss"].backward()
        out[cl] = ({k: float(v.detach()) for k, v in losses.items()},
                   {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (l0, g0), (l1, g1) = out[False], out[True]
    assert l0.keys() == l1.keys()
    for k in l0:
        assert l1[k] == pytest.approx(l0[k], rel=1e-4, abs=1e-5), k
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("cap, expected", [(None, 5), (1, 1), (2, 2), (9, 5)])
def test_mask_head_trains_on_at_most_cap_positives_per_image(cap, expected, monkeypatch):
    """Per image 5 positive RoIs (then 3 negatives, as the RoI sampler orders them): the mask head
    sees the first ``min(cap, 5)`` positives of each image, and the loss targets follow them."""
    model = build_model("mask_rcnn", model_config(2, "tiny", mask_rois_per_image=cap))
    seen = []
    real = model.mask_head.forward
    monkeypatch.setattr(model.mask_head, "forward", lambda x: seen.append(x.shape[0]) or real(x))
    images, targets = _batch(2)
    feats = model.backbone(model.pad(images))
    rois, labels = [], []
    for i, t in enumerate(targets):
        pos = t["boxes"] + torch.arange(5, dtype=torch.float32)[:, None]  # 5 shifted copies
        rois.append(torch.cat([pos, torch.tensor([[40.0, 40, 60, 60]]).expand(3, 4)]))
        labels.append(torch.tensor([i + 1] * 5 + [0] * 3))
    loss = model._mask_loss(feats, rois, labels, targets, images.device)
    assert seen == [2 * expected] and torch.isfinite(loss)


def test_mask_rois_per_image_is_checked():
    with pytest.raises(ValueError, match="mask_rois_per_image"):
        model_config(2, "tiny", mask_rois_per_image=0)
