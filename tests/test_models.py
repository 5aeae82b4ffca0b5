"""Every detector in 2D and 3D through the ``Detector`` seam: losses, backward, predict, bad input."""

from __future__ import annotations

import pytest
import torch

from retina_unet.models import MODEL_NAMES, Detector, ModelConfig, build_model, model_config

SIZES = {2: (64, 64), 3: (32, 32, 32)}


def make_batch(d: int, with_empty: bool = True):
    """Two images: one object of class 1 (a cube/square), and an empty one (K = 0)."""
    size = SIZES[d]
    torch.manual_seed(0)
    images = torch.rand(2, 1, *size)
    masks = torch.zeros(2, *size, dtype=torch.uint8)
    lo, hi = 6, 22
    masks[(0,) + (slice(lo, hi),) * d] = 1
    images[0][masks[0][None] > 0] += 0.5
    t0 = {
        "boxes": torch.tensor([[float(lo)] * d + [float(hi)] * d]),
        "labels": torch.tensor([1]),
        "masks": masks[0],
    }
    t1 = {"boxes": torch.zeros(0, 2 * d), "labels": torch.zeros(0, dtype=torch.int64), "masks": masks[1]}
    if not with_empty:
        t1 = {"boxes": torch.tensor([[8.0] * d + [20.0] * d]), "labels": torch.tensor([2]), "masks": masks[1]}
        t1["masks"][(slice(8, 20),) * d] = 2
    return images, [t0, t1]


def tiny(d: int, **kw) -> ModelConfig:
    return model_config(d, "tiny", pre_nms_top_k=50, **kw)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_losses_backward_and_predict(name, d):
    torch.manual_seed(0)
    model = build_model(name, tiny(d))
    assert isinstance(model, Detector) and model.name == name
    assert model.spatial_dims == d and model.num_classes == 2
    images, targets = make_batch(d)
    out = model.losses(images, targets)
    assert "loss" in out
    for k, v in out.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    preds = model.predict(images)
    assert len(preds) == 2
    for p in preds:
        n = p["boxes"].shape[0]
        assert p["boxes"].shape == (n, 2 * d) and p["boxes"].dtype == torch.float32
        assert p["scores"].shape == (n,) and p["scores"].dtype == torch.float32
        assert p["labels"].shape == (n,) and p["labels"].dtype == torch.int64
        assert n <= model.cfg.max_detections
        if n:
            assert ((p["labels"] >= 1) & (p["labels"] <= 2)).all()
            assert (p["scores"] > model.cfg.score_floor).all()
            assert (p["scores"][:-1] >= p["scores"][1:]).all()
            b = p["boxes"]
            hi = torch.tensor(SIZES[d], dtype=torch.float32)
            assert (b >= 0).all() and (b[:, :d] <= b[:, d:]).all() and (b[:, d:] <= hi).all()
        if model.has_segmentation:
            k = 2 if name == "retina_unet" else 3  # Retina U-Net segments fg vs bg (MDT)
            assert p["seg"].shape == (k, *SIZES[d]) and p["seg"].dtype == torch.float32
            torch.testing.assert_close(p["seg"].sum(0), torch.ones(SIZES[d]))
        else:
            assert "seg" not in p


def test_flags():
    for name in MODEL_NAMES:
        m = build_model(name, tiny(2))
        assert m.needs_masks == (name in ("retina_unet", "mask_rcnn", "ufrcnn_plus", "detunet"))
        assert m.has_segmentation == (name in ("retina_unet", "ufrcnn_plus", "detunet"))


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="retina_unet"):
        build_model("yolo", tiny(2))


@pytest.mark.parametrize("name", ["retina_unet", "mask_rcnn"])
def test_bad_inputs_raise_before_compute(name):
    model = build_model(name, tiny(2))
    images, targets = make_batch(2)
    with pytest.raises(ValueError, match=r"spatial_dims=2.*\(2, 1, 32, 32, 32\)"):
        model.losses(torch.rand(2, 1, 32, 32, 32), targets)
    with pytest.raises(ValueError, match="in_channels=1"):
        model.predict(torch.rand(2, 3, 64, 64))
    strict = build_model(name, tiny(2, pad_to_multiple=False))
    with pytest.raises(ValueError, match=r"multiple of \(32, 32\)"):
        strict.predict(torch.rand(1, 1, 64, 48))
    bad = [dict(targets[0], labels=torch.tensor([3])), targets[1]]
    with pytest.raises(ValueError, match=r"labels.*1\.\.num_classes=2"):
        model.losses(images, bad)
    bad = [dict(targets[0], labels=torch.tensor([0])), targets[1]]
    with pytest.raises(ValueError, match="labels"):
        model.losses(images, bad)
    nomask = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    with pytest.raises(ValueError, match="masks"):
        model.losses(images, nomask)
    with pytest.raises(ValueError, match="one dict per image"):
        model.losses(images, targets[:1])
    with pytest.raises(ValueError, match=r"boxes.*\(K, 4\)"):
        model.losses(
            images, [dict(targets[0], boxes=torch.zeros(1, 6), labels=torch.tensor([1])), targets[1]]
        )


def test_masks_optional_without_mask_models():
    model = build_model("retina_net", tiny(2))
    images, targets = make_batch(2)
    nomask = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    assert torch.isfinite(model.losses(images, nomask)["loss"])


def test_focal_loss_option():
    model = build_model("retina_net", tiny(2, class_loss="focal"))
    images, targets = make_batch(2, with_empty=False)
    assert torch.isfinite(model.losses(images, targets)["loss"])


def test_presets():
    p2, p3 = model_config(2), model_config(3)
    assert (p2.start_filters, p2.fpn_channels, p2.blocks, p2.norm) == (48, 192, (3, 4, 6, 3), None)
    assert (p3.start_filters, p3.fpn_channels, p3.box_pool_size, p3.mask_pool_size) == (
        18,
        36,
        (3, 7, 7),
        (5, 14, 14),
    )
    assert p2 == ModelConfig()
    for d in (2, 3):
        for size in ("paper", "cpu", "tiny"):
            cfg = model_config(d, size)
            assert cfg.spatial_dims == d and len(cfg.anchor_sizes) == len(cfg.detection_levels)
    assert model_config(2, "cpu", num_classes=3).num_classes == 3
    with pytest.raises(ValueError, match="size"):
        model_config(2, "huge")
    with pytest.raises(ValueError, match="spatial_dims"):
        model_config(4)


def test_paper_3d_strides_are_anisotropic():
    model = build_model(
        "retina_net",
        model_config(3, "paper", blocks=(1, 1, 1, 1), start_filters=4, fpn_channels=8, head_channels=8),
    )
    s = model.network.backbone.strides
    assert [s[k] for k in (2, 3, 4, 5)] == [(1, 4, 4), (2, 8, 8), (4, 16, 16), (8, 32, 32)]
    assert model.required_multiple == (8, 32, 32)


def test_cpu_preset_anchors_fit_toy_discs():
    """Some cpu-preset anchor of the 2D preset overlaps a centred 39 px disc box with IoU >= 0.5 on
    every grid offset, so every toy object gets regular positives (not only low-quality ones)."""
    from retina_unet.models.anchors import AnchorGenerator
    from retina_unet.ops.reference import box_iou_reference

    cfg = model_config(2, "cpu")
    gen = AnchorGenerator(2, cfg.anchor_sizes, cfg.anchor_scales_per_octave, cfg.anchor_ratios)
    strides = [(2**k, 2**k) for k in cfg.detection_levels]
    anchors = torch.cat(gen([(320 // s[0], 320 // s[1]) for s in strides], strides), 0)
    for off in range(0, 8):
        c = 160.0 + off
        gt = torch.tensor([[c - 19.5, c - 19.5, c + 19.5, c + 19.5]])
        assert box_iou_reference(gt, anchors).max() >= 0.5


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sizes_not_a_multiple_are_padded(name):
    """48 x 40 images (not multiples of 32): padded inside, outputs in the original frame."""
    model = build_model(name, tiny(2))
    images, targets = make_batch(2)
    images = images[:, :, :48, :40].contiguous()
    targets = [dict(t, masks=t["masks"][:48, :40].contiguous()) for t in targets]
    out = model.losses(images, targets)
    assert torch.isfinite(out["loss"])
    model.eval()
    for p in model.predict(images):
        assert (p["boxes"][:, 2] <= 48).all() and (p["boxes"][:, 3] <= 40).all()
        if model.has_segmentation:
            assert p["seg"].shape == (2 if name == "retina_unet" else 3, 48, 40)
