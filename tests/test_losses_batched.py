"""The batched anchor/RoI losses against their per-image references (issue #14).

The one-stage loss, the RPN proposals and loss and the RoI sampling run once per batch; the
per-image implementations they replaced are kept (``OneStageDetector._losses_reference``,
``RPN._proposals_reference``, ``RPN._losses_reference``, ``TwoStageDetector._sample_rois_reference``,
and the per-image functions of ``models.losses`` / ``models.sampling`` / ``models.matcher``).
The batched code makes the same random draws (the same ``randperm`` calls in the same order), so
for a given seed the samples are identical, the generator ends in the same state, and the losses
agree to float32 rounding (sums in another order).
"""

from __future__ import annotations

import pytest
import torch

from retina_unet import ops
from retina_unet.models import build_model, model_config
from retina_unet.models.losses import (
    box_regression_loss,
    box_regression_loss_batched,
    cap_positives,
    focal_class_loss,
    focal_class_loss_batched,
    foreground_probability,
    shem_class_loss,
    shem_class_loss_batched,
    shem_negatives,
)
from retina_unet.models.matcher import IGNORE, NEGATIVE, Matcher, gather_matched, match_batch
from retina_unet.models.sampling import sample_anchors_batched

SIZES = {2: (64, 64), 3: (32, 32, 32)}
COUNTS = [0, 1, 3, 0, 2]  # objects per image: images without objects, one, several
TOL = {"rtol": 1e-6, "atol": 1e-6}


def random_targets(d: int, counts, seed: int = 0, duplicate: bool = False):
    """Images ``(B, 1, *S)`` and targets with ``counts[b]`` random boxes of classes 1..2 (and
    segmentation masks). ``duplicate``: the first object of each image twice (tied IoUs)."""
    g = torch.Generator().manual_seed(seed)
    size = SIZES[d]
    s = torch.tensor(size, dtype=torch.float32)
    images = torch.rand(len(counts), 1, *size, generator=g)
    targets = []
    for k in counts:
        lo = torch.rand(k, d, generator=g) * s * 0.7
        hi = torch.minimum(lo + 3 + torch.rand(k, d, generator=g) * s * 0.4, s)
        boxes, labels = torch.cat([lo, hi], 1), torch.randint(1, 3, (k,), generator=g)
        if duplicate and k:
            boxes, labels = torch.cat([boxes[:1], boxes]), torch.cat([labels[:1], labels])
        masks = torch.randint(0, 3, size, generator=g, dtype=torch.uint8)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return images, targets


def random_anchors(d: int, n: int, g: torch.Generator) -> torch.Tensor:
    size = torch.tensor(SIZES[d], dtype=torch.float32)
    lo = torch.rand(n, d, generator=g) * size * 0.8
    return torch.cat([lo, lo + 2 + torch.rand(n, d, generator=g) * size * 0.3], 1)


def assert_same_losses(batched: dict, reference: dict) -> None:
    assert batched.keys() == reference.keys()
    for k in reference:
        torch.testing.assert_close(batched[k], reference[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def run_both(model, fast, slow, images, targets, seed: int = 7):
    """Losses, the generator state afterwards and the gradients, of ``fast`` and of ``slow``
    (callables of the model) from the same global RNG state."""
    out = []
    for fn in (fast, slow):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        losses = fn(images, targets)
        state = torch.get_rng_state()
        losses["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out.append((losses, state, grads))
    return out


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_match_batch_equals_per_image_matcher(d, low_quality, seed):
    g = torch.Generator().manual_seed(seed)
    anchors = random_anchors(d, 300, g)
    anchors = torch.cat([anchors, anchors[:20]])  # duplicate anchors: ties in the low-quality matches
    _, targets = random_targets(d, COUNTS + [5], seed, duplicate=True)
    gt = [t["boxes"] for t in targets]
    matcher = Matcher(0.5, 0.1 + 0.1 * seed % 3, low_quality)
    got = match_batch(matcher, gt, anchors)
    assert got.shape == (len(gt), anchors.shape[0]) and got.dtype == torch.int64
    for b, boxes in enumerate(gt):
        iou = ops.box_iou(boxes, anchors) if boxes.shape[0] else anchors.new_zeros((0, anchors.shape[0]))
        assert torch.equal(got[b], matcher(iou)), b
    assert (got[0] == NEGATIVE).all() and (got[3] == NEGATIVE).all()  # images without objects


def test_match_batch_ties_go_to_the_first_object():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    got = match_batch(Matcher(0.5, 0.1), [torch.zeros(0, 4), torch.cat([box, box, box])], anchors)
    assert got.tolist() == [[NEGATIVE, NEGATIVE], [0, NEGATIVE]]


def test_match_batch_without_any_object():
    anchors = random_anchors(2, 10, torch.Generator().manual_seed(0))
    got = match_batch(Matcher(0.5, 0.1), [torch.zeros(0, 4)] * 3, anchors)
    assert got.shape == (3, 10) and (got == NEGATIVE).all()


def test_gather_matched():
    per_image = [torch.tensor([1, 2]), torch.zeros(0, dtype=torch.int64), torch.tensor([3])]
    matches = torch.tensor([[1, 0, NEGATIVE], [NEGATIVE, IGNORE, NEGATIVE], [IGNORE, 0, 0]])
    got = gather_matched(per_image, matches)
    pos = matches >= 0
    assert got[pos].tolist() == [2, 1, 3, 3]
    rows = torch.nonzero(pos.flatten()).squeeze(1)
    assert gather_matched(per_image, matches, rows).tolist() == [2, 1, 3, 3]


# --- sampling ------------------------------------------------------------------------------------


def random_matches(b: int, a: int, g: torch.Generator, num_pos) -> torch.Tensor:
    """``(B, A)`` matches with ``num_pos[b]`` positives, ~half the rest NEGATIVE, the others IGNORE."""
    m = torch.where(torch.rand(b, a, generator=g) < 0.5, NEGATIVE, IGNORE)
    for i, n in enumerate(num_pos):
        m[i, torch.randperm(a, generator=g)[:n]] = torch.randint(0, 3, (n,), generator=g)
    return m


@pytest.mark.parametrize("max_positives", [None, 1, 3])
@pytest.mark.parametrize("poolsize", [None, 1, 4])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 3.0])
def test_one_stage_sampling_draws_as_per_image(max_positives, poolsize, ratio):
    """cap_positives then shem_negatives per image, with the same seed: the same positives, the
    same negatives, the generator in the same state."""
    g = torch.Generator().manual_seed(int(ratio * 10) + (poolsize or 0))
    b, a = 6, 120
    logits = torch.randn(b, a, 3, generator=g)
    logits[:, 40:80] = logits[:, 40:41]  # tied hardness (as anchors with all-zero features)
    matches = random_matches(b, a, g, [0, 1, 5, 12, 0, 3])
    matches[4] = IGNORE  # an image with neither positives nor negatives
    torch.manual_seed(3)
    hardness = foreground_probability(logits) if poolsize is not None else None
    kept, negatives = sample_anchors_batched(
        matches >= 0, matches == NEGATIVE, max_positives, lambda n: max(1, round(ratio * n)), hardness, poolsize
    )
    state = torch.get_rng_state()
    torch.manual_seed(3)
    for i in range(b):
        capped = cap_positives(matches[i], max_positives)
        assert torch.equal(kept[i], capped >= 0), i
        neg_idx = torch.nonzero(capped == NEGATIVE).squeeze(1)
        expected = torch.zeros(a, dtype=torch.bool)
        if neg_idx.numel():
            count = max(1, round(ratio * int((capped >= 0).sum())))
            expected[neg_idx[shem_negatives(logits[i][neg_idx], count, poolsize)]] = True
        assert torch.equal(negatives[i], expected), i
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("poolsize", [None, 2])
@pytest.mark.parametrize("batch_size", [2, 16])
def test_rpn_sampling_draws_as_per_image(poolsize, batch_size):
    rpn = build_model("mask_rcnn", model_config(2, "tiny", shem_poolsize=poolsize, rpn_batch_size=batch_size)).rpn
    g = torch.Generator().manual_seed(batch_size)
    b, a = 5, 150
    obj = torch.randn(b, a, generator=g)
    obj[:, 30:100] = obj[:, 30:31]  # tied objectness
    matches = random_matches(b, a, g, [0, 1, 4, 20, 2])
    matches[0] = IGNORE  # no negatives: randperm(0) draws as per image
    cfg = rpn.cfg
    torch.manual_seed(1)
    hardness = foreground_probability(torch.stack([torch.zeros_like(obj), obj], -1)) if poolsize else None
    pos, neg = sample_anchors_batched(
        matches >= 0,
        matches == NEGATIVE,
        int(cfg.rpn_batch_size * cfg.rpn_positive_fraction),
        lambda n: max(1, cfg.rpn_batch_size - n),
        hardness,
        poolsize,
        always_draw=True,
    )
    state = torch.get_rng_state()
    torch.manual_seed(1)
    for i in range(b):
        p, n = rpn._sample(obj[i], matches[i])
        assert sorted(torch.nonzero(pos[i]).squeeze(1).tolist()) == sorted(p.tolist()), i
        assert sorted(torch.nonzero(neg[i]).squeeze(1).tolist()) == sorted(n.tolist()), i
    assert torch.equal(state, torch.get_rng_state())


# --- loss functions ------------------------------------------------------------------------------


def _loss_inputs(seed: int):
    """Logits, matches and per-anchor labels of 6 images: with and without positives, one without
    negatives (all positive or ignored), one all ignored."""
    g = torch.Generator().manual_seed(seed)
    b, a = 6, 80
    logits = torch.randn(b, a, 3, generator=g) * 3
    matches = random_matches(b, a, g, [0, 1, 4, 9, 2, 0])
    matches[4][matches[4] == NEGATIVE] = IGNORE  # positives, no negatives
    matches[5] = IGNORE  # nothing at all
    gt_labels = [torch.randint(1, 3, (3,), generator=g) for _ in range(b)]
    return logits, matches, gt_labels


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("poolsize", [None, 2])
def test_shem_class_loss_batched_equals_per_image(seed, poolsize):
    logits, matches, gt_labels = _loss_inputs(seed)
    logits.requires_grad_(True)
    torch.manual_seed(seed)
    hardness = foreground_probability(logits) if poolsize else None
    _, negatives = sample_anchors_batched(matches >= 0, matches == NEGATIVE, None, lambda n: max(1, n), hardness, poolsize)
    got = shem_class_loss_batched(logits, matches, gather_matched(gt_labels, matches), negatives)
    torch.manual_seed(seed)
    expected = torch.stack(
        [shem_class_loss(logits[i], matches[i], gt_labels[i], 1.0, poolsize) for i in range(len(gt_labels))]
    )
    torch.testing.assert_close(got, expected, **TOL)
    g_got, = torch.autograd.grad(got.mean(), logits)
    g_exp, = torch.autograd.grad(expected.mean(), logits)
    torch.testing.assert_close(g_got, g_exp, **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_focal_class_loss_batched_equals_per_image(seed):
    logits, matches, gt_labels = _loss_inputs(seed)
    got = focal_class_loss_batched(logits, matches, gather_matched(gt_labels, matches), 0.3, 1.5)
    expected = torch.stack([focal_class_loss(logits[i], matches[i], gt_labels[i], 0.3, 1.5) for i in range(6)])
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_box_regression_loss_batched_equals_per_image(seed):
    g = torch.Generator().manual_seed(seed)
    counts = [0, 3, 1, 0, 7]
    pred, target = torch.randn(11, 6, generator=g), torch.randn(11, 6, generator=g)
    image = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    got = box_regression_loss_batched(pred, target, image, 5, beta=0.3)
    expected = torch.stack(
        [box_regression_loss(p, t, 0.3) for p, t in zip(pred.split(counts), target.split(counts), strict=True)]
    )
    torch.testing.assert_close(got, expected, **TOL)


# --- whole models --------------------------------------------------------------------------------

ONE_STAGE_VARIANTS = [
    {},  # tiny defaults: shem, pool 10, max_positives 1
    {"max_positives": None},
    {"shem_poolsize": None},
    {"max_positives": None, "shem_poolsize": None, "neg_pos_ratio": 3.0},
    {"class_loss": "focal"},
    {"class_loss": "focal", "max_positives": None},
]


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", ["retina_net", "retina_unet"])
@pytest.mark.parametrize("variant", ONE_STAGE_VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_one_stage_losses_equal_per_image_reference(d, name, variant):
    torch.manual_seed(0)
    model = build_model(name, model_config(d, "tiny", **variant))
    for counts, duplicate in ((COUNTS, True), ([0, 0], False), ([2, 1], False)):
        images, targets = random_targets(d, counts, seed=len(counts), duplicate=duplicate)
        (fast, s_fast, g_fast), (slow, s_slow, g_slow) = run_both(
            model, model.losses, model._losses_reference, images, targets
        )
        assert_same_losses(fast, slow)
        assert torch.equal(s_fast, s_slow)  # the same draws
        assert g_fast.keys() == g_slow.keys()
        for k in g_slow:
            torch.testing.assert_close(g_fast[k], g_slow[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def test_one_stage_cpu_preset_on_toy_samples():
    """The cpu preset (no positive cap, pool 20) on real toy patches, several steps of training so
    the logits are not those of the initialisation: same losses and draws at every step."""
    import toy_data

    spec = toy_data.task_spec("donuts_shape", dim=2)
    samples = [toy_data.generate_sample(spec, split_seed=0, index=i) for i in range(4)]
    images = torch.stack([torch.from_numpy(s.image[:64, :64]).float()[None] for s in samples])
    targets = []
    for s in samples:  # boxes inside the 64^2 crop (clipped; those under 2 px dropped)
        b = torch.from_numpy(s.boxes).float().clamp(0, 64)
        keep = ((b[:, 2:] - b[:, :2]) >= 2).all(1)
        targets.append({"boxes": b[keep], "labels": torch.from_numpy(s.labels)[keep], "masks": torch.zeros(64, 64, dtype=torch.uint8)})
    targets[-1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "masks": targets[-1]["masks"]}
    torch.manual_seed(0)
    model = build_model("retina_net", model_config(2, "cpu"))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(2):
        (fast, s_fast, _), (slow, s_slow, _) = run_both(model, model.losses, model._losses_reference, images, targets, step)
        assert_same_losses(fast, slow)
        assert torch.equal(s_fast, s_slow)
        opt.step()


TWO_STAGE_VARIANTS = [
    {},
    {"shem_poolsize": None},
    {"rpn_batch_size": 2, "roi_batch_size": 2},
    {"rpn_batch_size": 64, "shem_poolsize": 3, "roi_batch_size": 32, "roi_positive_fraction": 0.9},
    {"mask_rois_per_image": 1},
]


def use_reference(model) -> None:
    model.rpn._proposals = model.rpn._proposals_reference
    model.rpn._losses = model.rpn._losses_reference
    model._sample_rois = model._sample_rois_reference
    model._mask_loss = model._mask_loss_reference


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", ["mask_rcnn", "ufrcnn_plus"])
@pytest.mark.parametrize("variant", TWO_STAGE_VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_two_stage_losses_equal_per_image_reference(d, name, variant):
    torch.manual_seed(0)
    fast_model = build_model(name, model_config(d, "tiny", **variant))
    slow_model = build_model(name, model_config(d, "tiny", **variant))
    slow_model.load_state_dict(fast_model.state_dict())
    use_reference(slow_model)
    for counts in (COUNTS, [0, 0], [2, 1]):
        images, targets = random_targets(d, counts, seed=len(counts), duplicate=True)
        results = []
        for model in (fast_model, slow_model):
            results.append(run_both(model, model.losses, model.losses, images, targets)[0])
        (fast, s_fast, g_fast), (slow, s_slow, g_slow) = results
        assert_same_losses(fast, slow)
        assert torch.equal(s_fast, s_slow)
        for k in g_slow:
            torch.testing.assert_close(g_fast[k], g_slow[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def _rpn_inputs(d: int, seed: int):
    """Objectness and deltas of a tiny RPN on random images (a few of them tied), its anchors."""
    torch.manual_seed(seed)
    model = build_model("mask_rcnn", model_config(d, "tiny"))
    images, _ = random_targets(d, [0] * 4, seed)
    images[3] = images[2]  # identical images: identical scores in two images
    feats = model.backbone(model.pad(images))
    rpn = model.rpn
    obj, deltas, counts = [], [], []
    from retina_unet.models.anchors import flatten_head_output

    for k in rpn.levels:
        o, dl = rpn.head(feats[k])
        obj.append(flatten_head_output(o, 1).squeeze(-1))
        deltas.append(flatten_head_output(dl, 2 * d))
        counts.append(obj[-1].shape[1])
    shapes = [feats[k].shape[2:] for k in rpn.levels]
    anchors = torch.cat(rpn.anchor_generator(shapes, rpn.strides, obj[0].device), 0)
    return rpn, torch.cat(obj, 1).detach(), torch.cat(deltas, 1).detach() * 20, anchors, counts, SIZES[d]


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("bg_iou", [0.0, 0.3])
def test_rpn_losses_equal_per_image_reference(d, bg_iou):
    """``rpn_bg_iou=0``: images with objects have no negatives, so the images' samples differ in
    size (a mean over the batch's samples would differ from the mean of the per-image means)."""
    rpn, obj, deltas, anchors, _, _ = _rpn_inputs(d, 1)
    rpn.cfg = rpn.cfg.replace(rpn_bg_iou=bg_iou)
    rpn.matcher = Matcher(rpn.cfg.rpn_fg_iou, bg_iou, low_quality=True)
    _, targets = random_targets(d, [0, 1, 3, 2], seed=3, duplicate=True)
    results = []
    for fn in (rpn._losses, rpn._losses_reference):
        o, dl = obj.clone().requires_grad_(True), deltas.clone().requires_grad_(True)
        torch.manual_seed(2)
        losses = fn(o, dl, anchors, targets)
        state = torch.get_rng_state()
        grads = torch.autograd.grad(losses["rpn_class"] + losses["rpn_box"], (o, dl))
        results.append((losses, state, grads))
    (fast, s_fast, g_fast), (slow, s_slow, g_slow) = results
    assert_same_losses(fast, slow)
    assert torch.equal(s_fast, s_slow)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_proposals_equal_per_image_reference(d, training):
    rpn, obj, deltas, anchors, counts, size = _rpn_inputs(d, 0)
    rpn.train(training)
    for top_k, post in ((100, 20), (5, 3), (1000, 1000)):
        rpn.cfg = rpn.cfg.replace(rpn_pre_nms_top_k=top_k, rpn_post_nms_top_k_train=post, rpn_post_nms_top_k_test=post)
        fast = rpn._proposals(obj, deltas, anchors, counts, size)
        slow = rpn._proposals_reference(obj, deltas, anchors, counts, size)
        assert len(fast) == len(slow)
        for f, s in zip(fast, slow, strict=True):
            assert torch.equal(f, s)  # same boxes, same order


@pytest.mark.parametrize("d", [2, 3])
def test_sample_rois_equal_per_image_reference(d):
    torch.manual_seed(0)
    model = build_model("mask_rcnn", model_config(d, "tiny", roi_batch_size=6, roi_positive_fraction=0.5))
    _, targets = random_targets(d, COUNTS, seed=1, duplicate=True)
    g = torch.Generator().manual_seed(2)
    proposals = []
    for t in targets:  # proposals: jittered copies of the objects and random boxes (some images none)
        jitter = t["boxes"].repeat(3, 1) + torch.randn(3 * t["boxes"].shape[0], 2 * d, generator=g)
        proposals.append(torch.cat([jitter, random_anchors(d, 7, g)]))
    proposals[3] = torch.zeros(0, 2 * d)
    torch.manual_seed(4)
    fast = model._sample_rois(proposals, targets, torch.device("cpu"))
    state = torch.get_rng_state()
    torch.manual_seed(4)
    slow = model._sample_rois_reference(proposals, targets, torch.device("cpu"))
    assert torch.equal(state, torch.get_rng_state())
    for got, expected in zip(fast, slow, strict=True):  # rois, labels, matched: per image, in order
        assert len(got) == len(expected) == len(targets)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
    assert any((lab > 0).any() for lab in fast[1]) and any((lab == 0).any() for lab in fast[1])


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("cap", [None, 1, 2])
def test_mask_loss_equals_per_image_reference(d, cap):
    torch.manual_seed(0)
    model = build_model("mask_rcnn", model_config(d, "tiny", mask_rois_per_image=cap))
    images, targets = random_targets(d, COUNTS, seed=2)
    feats = model.backbone(model.pad(images))
    g = torch.Generator().manual_seed(3)
    rois = [random_anchors(d, n, g) for n in (4, 0, 6, 3, 5)]
    labels = [torch.tensor(x, dtype=torch.int64) for x in ([0, 2, 1, 1], [], [1, 0, 0, 2, 2, 1], [0, 0, 0], [2, 0, 1, 1, 0])]
    fast = model._mask_loss(feats, rois, labels, targets, torch.device("cpu"))
    slow = model._mask_loss_reference(feats, rois, labels, targets, torch.device("cpu"))
    torch.testing.assert_close(fast, slow, **TOL)
    g_fast = torch.autograd.grad(fast, list(model.mask_head.parameters()), retain_graph=True)
    g_slow = torch.autograd.grad(slow, list(model.mask_head.parameters()))
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    none = [torch.zeros_like(lab) for lab in labels]  # no positives: a zero in the graph
    assert float(model._mask_loss(feats, rois, none, targets, torch.device("cpu")).detach()) == 0.0


def _bad_targets(d: int):
    """(name, targets) pairs: valid ones, and each way the per-image checks reject."""
    _, t = random_targets(d, [1, 2, 0], seed=0)
    nan_boxes = t[1]["boxes"].clone()
    nan_boxes[0, 0] = float("nan")
    return [
        ("valid", t),
        ("too few", t[:2]),
        ("no masks", [t[0], {k: v for k, v in t[1].items() if k != "masks"}, t[2]]),
        ("box shape", [t[0], dict(t[1], boxes=torch.zeros(2, 2 * d + 1)), t[2]]),
        ("label shape", [t[0], dict(t[1], labels=torch.tensor([1])), t[2]]),
        ("float labels", [t[0], dict(t[1], labels=t[1]["labels"].float()), t[2]]),
        ("label 0", [t[0], dict(t[1], labels=torch.tensor([1, 0])), t[2]]),
        ("label 3", [dict(t[0], labels=torch.tensor([3])), t[1], t[2]]),
        ("nan box", [t[0], dict(t[1], boxes=nan_boxes), t[2]]),
        ("mask shape", [t[0], t[1], dict(t[2], masks=torch.zeros(5, dtype=torch.uint8))]),
        ("float mask", [t[0], t[1], dict(t[2], masks=t[2]["masks"].float())]),
        ("mask class 3", [t[0], t[1], dict(t[2], masks=t[2]["masks"] * 0 + 3)]),
        ("int32 labels", [t[0], dict(t[1], labels=t[1]["labels"].int()), t[2]]),
        ("first bad of two", [dict(t[0], labels=torch.tensor([3])), dict(t[1], boxes=torch.zeros(2, 1)), t[2]]),
    ]


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", ["retina_net", "mask_rcnn"])
def test_batched_target_checks_agree_with_per_image_checks(d, name):
    """check_targets checks the whole batch at once and, for a bad batch, raises what the
    per-image checks raise (the first bad image's error)."""
    model = build_model(name, model_config(d, "tiny"))
    images = torch.rand(3, 1, *SIZES[d])
    for case, targets in _bad_targets(d):
        try:
            model._check_targets_per_image(images, targets)
            expected = None
        except (ValueError, TypeError) as e:
            expected = e
        assert model._targets_valid(images, targets) == (expected is None), case
        if expected is None:
            model.check_targets(images, targets)
        else:
            with pytest.raises(type(expected)) as got:
                model.check_targets(images, targets)
            assert str(got.value) == str(expected), case
