"""Training: seeded reproducibility, resume == uninterrupted, atomic checkpoints, input errors,
nested subsets, presets; ``train_and_evaluate`` end to end with a tiny stand-in detector."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from retina_unet.data import BatchSampler, InputError, check_inputs, subset_indices
from retina_unet.training import (
    TrainConfig,
    Trainer,
    learning_rate,
    load_checkpoint,
    parse_override,
    preset,
    save_checkpoint,
)


def use_tiny_models(monkeypatch) -> None:
    """Build :class:`TinySegDetector` wherever a run builds or loads its model (the pipeline and the
    run-folder loader)."""
    import retina_unet.pipeline as pipeline
    import retina_unet.rundir as rundir

    def build(cfg, num_classes, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        return TinySegDetector(cfg.spatial_dims, num_classes)

    monkeypatch.setattr(pipeline, "build_from_config", build)
    monkeypatch.setattr(rundir, "build_from_config", build)


class TinySegDetector(torch.nn.Module):
    """Stand-in detector meeting the model contract: per-pixel classes, boxes from the argmax map."""

    needs_masks = True
    has_segmentation = True

    def __init__(self, spatial_dims: int = 2, num_classes: int = 2):
        super().__init__()
        conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.net = torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, num_classes + 1, 1))

    def losses(self, images, targets):
        masks = torch.stack([t["masks"] for t in targets]).long()
        ce = torch.nn.functional.cross_entropy(self.net(images), masks)
        return {"loss": ce, "ce": ce.detach()}

    @torch.no_grad()
    def predict(self, images):
        prob = self.net(images).softmax(1)
        out = []
        for p in prob:
            arg = p.argmax(0)
            boxes, scores, labels = [], [], []
            for c in range(1, self.num_classes + 1):
                on = arg == c
                if on.any():
                    idx = torch.nonzero(on)
                    boxes.append(torch.cat([idx.min(0).values, idx.max(0).values + 1]).float())
                    scores.append(p[c][on].max())
                    labels.append(c)
            d = 2 * self.spatial_dims
            out.append(
                {
                    "boxes": torch.stack(boxes) if boxes else torch.zeros(0, d),
                    "scores": torch.stack(scores) if scores else torch.zeros(0),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                    "seg": p,
                }
            )
        return out



class SamplingSegDetector(TinySegDetector):
    """Like the real detectors' loss sampling (negative mining, anchor sampling): each step's loss
    uses a random half of the pixels, drawn from the *global* torch RNG, so a resumed run matches the
    uninterrupted one only if the global RNG state is saved and restored."""

    def losses(self, images, targets):
        masks = torch.stack([t["masks"] for t in targets]).long()
        ce = torch.nn.functional.cross_entropy(self.net(images), masks, reduction="none")
        keep = torch.rand(ce.shape) < 0.5  # global RNG, on purpose
        loss = ce[keep].mean()
        return {"loss": loss, "ce": loss.detach()}


@dataclass
class FakeSplit:
    images: np.ndarray
    masks: np.ndarray | None
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self):
        return len(self.labels)


def fake_split(n=12, size=24, dim=2, seed=0) -> FakeSplit:
    rng = np.random.default_rng(seed)
    shape = (size,) * dim
    images = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    masks = np.zeros((n, *shape), np.uint8)
    labels = rng.integers(1, 3, (n, 1))
    boxes = np.zeros((n, 1, 2 * dim), np.float32)
    for i in range(n):
        lo = rng.integers(0, size - 8, dim)
        sl = (i,) + tuple(slice(a, a + 6) for a in lo)
        images[sl] += 0.5 * labels[i, 0]
        masks[sl] = labels[i, 0]
        boxes[i, 0] = np.concatenate([lo, lo + 6])
    return FakeSplit(images, masks, labels, boxes)


TINY = dict(
    model_size="tiny",
    batch_size=2,
    epochs=3,
    batches_per_epoch=3,
    val_batch_size=4,
    top_k=2,
    lr=1e-2,
    pool_train=12,
    n_train=8,
    device="cpu",
)


def _trainer(tmp_path, name="run", model_cls=None, **over):
    cfg = TrainConfig(**{**TINY, **over})
    torch.manual_seed(cfg.seed)
    model = (model_cls or TinySegDetector)()
    train, val = fake_split(12), fake_split(6, seed=1)
    idx = subset_indices(len(train), cfg.n_train, cfg.seed)
    return Trainer(cfg, model, train, val, idx, 2, tmp_path / name, progress=False)


def _losses(history):
    return [h["loss"] for h in history]


def test_same_seed_same_losses_other_seed_differs(tmp_path):
    a = _trainer(tmp_path, "a", epochs=2).fit()
    b = _trainer(tmp_path, "b", epochs=2).fit()
    c = _trainer(tmp_path, "c", epochs=2, seed=1).fit()
    assert _losses(a) == _losses(b)
    assert _losses(a) != _losses(c)
    assert all(np.isfinite(_losses(a)))


def test_resume_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path, "full")
    full.fit()
    part = _trainer(tmp_path, "part")
    part.fit(stop_after=1)  # "interrupted" after epoch 1
    resumed = _trainer(tmp_path, "part")
    assert resumed.try_resume() and resumed.epoch == 1
    resumed.fit()
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert _losses(resumed.history) == _losses(full.history)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    assert [e["epoch"] for e in resumed.top_k] == [e["epoch"] for e in full.top_k]



def test_resume_restores_global_rng_for_models_that_sample(tmp_path):
    """A model drawing from the global RNG in its loss: resumed == uninterrupted, bit for bit.

    Between the interrupted run and the resume, the process draws from the global RNG (re-seeding
    and building the model), so a resume that does not restore the saved RNG state trains epochs 2-3
    on other pixel samples and its losses and weights differ."""
    full = _trainer(tmp_path, "full", model_cls=SamplingSegDetector)
    full.fit()
    part = _trainer(tmp_path, "part", model_cls=SamplingSegDetector)
    part.fit(stop_after=1)
    torch.rand(7)  # the process goes on drawing after the interruption
    resumed = _trainer(tmp_path, "part", model_cls=SamplingSegDetector)
    assert resumed.try_resume() and resumed.epoch == 1
    resumed.fit()
    assert _losses(resumed.history) == _losses(full.history)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # the loss does depend on the global RNG (else this test could not see a missing restore):
    # same seed and weights, another global RNG state at the start -> another first-epoch loss
    other = _trainer(tmp_path, "other", model_cls=SamplingSegDetector)
    torch.manual_seed(123)
    other.fit(stop_after=1)
    assert _losses(other.history)[0] != _losses(full.history)[0]


def test_resume_refuses_other_config(tmp_path):
    _trainer(tmp_path, "r").fit(stop_after=1)
    with pytest.raises(ValueError, match="different config"):
        _trainer(tmp_path, "r", lr=0.5).try_resume()


def test_checkpoints_carry_metadata_and_top_k_files(tmp_path):
    t = _trainer(tmp_path, "m")
    t.fit()
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "last.pt" in files and "history.json" in files
    assert sorted(f for f in files if f.startswith("epoch_")) == sorted(e["path"] for e in t.top_k)
    assert len(t.top_k) == 2
    ck = load_checkpoint(tmp_path / "m" / "last.pt")
    for key in ("config", "seed", "git_commit", "environment", "optimizer", "model", "epoch", "sampler"):
        assert key in ck
    assert ck["environment"]["torch"] == torch.__version__ and "build_info" in ck["environment"]
    assert TrainConfig.from_dict(ck["config"]) == t.cfg
    assert len(json.loads((tmp_path / "m" / "history.json").read_text())) == 3


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"v": 1}, path)

    def boom(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"v": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1}  # the old file is intact
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temp files left behind


def test_nested_subsets_and_errors():
    small, big = subset_indices(1000, 50, 3), subset_indices(1000, 100, 3)
    assert np.array_equal(small, big[:50])
    assert not np.array_equal(subset_indices(1000, 50, 4), small)
    assert len(set(big.tolist())) == 100
    with pytest.raises(InputError, match="empty"):
        subset_indices(10, 0, 0)
    with pytest.raises(InputError, match="larger than the training pool"):
        subset_indices(10, 11, 0)
    with pytest.raises(ValueError, match="larger than the train pool"):
        TrainConfig(n_train=2000)
    with pytest.raises(ValueError, match="empty training set"):
        TrainConfig(n_train=0)


def test_bad_inputs_are_caught_before_training():
    model = TinySegDetector(2)
    split = fake_split(6)
    check_inputs(split, range(6), model)  # fine
    with pytest.raises(InputError, match="3D .* model is 2D"):
        check_inputs(fake_split(4, size=10, dim=3), range(4), model)
    bad = fake_split(6)
    bad.labels[2, 0] = 5
    with pytest.raises(InputError, match="outside the class range"):
        check_inputs(bad, range(6), model)
    nomask = fake_split(6)
    nomask.masks = None
    with pytest.raises(InputError, match="needs segmentation masks"):
        check_inputs(nomask, range(6), model)
    with pytest.raises(InputError, match="empty"):
        check_inputs(split, [], model)


def test_batch_sampler_class_balance_and_patches():
    split = fake_split(40, size=32)
    s = BatchSampler(
        split, np.arange(40), 200, 2, class_balanced=True, patch_size=(16, 16), fg_prob=1.0, seed=0
    )
    images, targets = s.next_batch()
    assert images.shape == (200, 1, 16, 16)
    labels = [int(t["labels"][0]) for t in targets]
    assert all(len(t["labels"]) == 1 for t in targets)  # fg_prob 1: the object is always in the crop
    assert 0.35 < np.mean(np.array(labels) == 1) < 0.65
    for _im, t in zip(images, targets, strict=False):
        b = t["boxes"][0].long()
        assert (t["masks"][b[0] : b[2], b[1] : b[3]] > 0).all()  # box still on the object's pixels
        assert t["masks"].shape == (16, 16)
    s2 = BatchSampler(split, np.arange(40), 4, 2, patch_size=(16, 16), seed=0)
    s3 = BatchSampler(split, np.arange(40), 4, 2, patch_size=(16, 16), seed=0)
    assert torch.equal(s2.next_batch()[0], s3.next_batch()[0])


def test_presets_and_overrides():
    for name in ("paper", "cpu", "smoke"):
        for dim in (2, 3):
            cfg = preset(name, dim)
            assert cfg.spatial_dims == dim
            assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    p2, p3 = preset("paper", 2), preset("paper", 3)
    assert (p2.batch_size, p3.batch_size, p2.epochs, p2.batches_per_epoch, p2.lr) == (20, 8, 24, 100, 1e-4)
    assert p2.tta and p2.merge == "wbc" and p2.top_k == 5
    assert preset("cpu", 2, model="retina_net", seed=3).model == "retina_net"
    assert parse_override("patch_size=(96, 96)") == ("patch_size", (96, 96))
    assert parse_override("tta=False") == ("tta", False)
    assert parse_override("model=mask_rcnn") == ("model", "mask_rcnn")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        parse_override("nope=1")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gpu", 2)


def test_train_and_evaluate_smoke(tmp_path, monkeypatch):
    import retina_unet.pipeline as run

    use_tiny_models(monkeypatch)
    cfg = preset("smoke", 2, device="cpu")
    res = run.train_and_evaluate(cfg, tmp_path / "run", data_root=tmp_path / "data", progress=False)
    assert json.loads(json.dumps(res)) == res
    assert set(res) >= {
        "mAP",
        "ap",
        "patient_mAP",
        "curve",
        "wall_s",
        "config",
        "seed",
        "git_commit",
        "environment",
    }
    assert len(res["curve"]) == cfg.epochs and res["test"]["n_images"] == cfg.pool_test
    assert res["test"]["n_members"] == cfg.tta_views * cfg.top_k
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == res
    # a second call leaves the finished run untouched and returns its stored result
    files = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "run").iterdir()}
    again = run.train_and_evaluate(cfg, tmp_path / "run", data_root=tmp_path / "data", progress=False)
    assert again.pop("already_finished") is True and again == res
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "run").iterdir()} == files
    # unless asked to re-evaluate: no more training, same test result, result.json rewritten
    again = run.train_and_evaluate(cfg, tmp_path / "run", data_root=tmp_path / "data", progress=False,
                                   re_evaluate=True)
    assert again["resumed"] and again["mAP"] == res["mAP"] and again["curve"] == res["curve"]
    assert (tmp_path / "run" / "result.json").stat().st_mtime_ns != files["result.json"]


def test_autocast_for_cpu_bf16_only_where_the_cpu_has_it(monkeypatch):
    import contextlib

    import retina_unet.environment as env

    assert isinstance(env.cpu_has_native_bf16(), bool)  # the real check runs here
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(env, "cpu_has_native_bf16", lambda native=native: native)
        ac = env.autocast_for(cpu, cuda_amp=True, cpu_bf16=True)
        if native:
            assert isinstance(ac, torch.autocast) and ac.device == "cpu" and ac.fast_dtype == torch.bfloat16
            assert env.precision_of(cpu, True, True) == "bfloat16-autocast"
        else:  # no native bfloat16: the run stays float32 (a choice, not measured), and says so
            assert isinstance(ac, contextlib.nullcontext)
            assert env.precision_of(cpu, True, True) == "float32"
        assert isinstance(env.autocast_for(cpu, cuda_amp=True, cpu_bf16=False), contextlib.nullcontext)
        assert env.precision_of(cpu, True, False) == "float32"
        # cpu_bf16 is the CPU's setting only: a CUDA run without amp stays float32
        cuda = torch.device("cuda")
        assert isinstance(env.autocast_for(cuda, cuda_amp=False, cpu_bf16=True), contextlib.nullcontext)
        assert env.precision_of(cuda, False, True) == "float32"


def test_cpu_bf16_trains_and_tests_in_bfloat16(tmp_path, monkeypatch):
    import retina_unet.environment as env
    import retina_unet.pipeline as run

    monkeypatch.setattr(env, "cpu_has_native_bf16", lambda: True)  # on any CPU (emulated where not native)
    t = _trainer(tmp_path, "bf16", cpu_bf16=True, epochs=1)
    assert t.meta["precision"] == "bfloat16-autocast"
    with t._autocast():
        out = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    assert out.dtype == torch.bfloat16
    assert np.isfinite(_losses(t.fit())).all()
    assert _trainer(tmp_path, "fp32", epochs=1).meta["precision"] == "float32"

    # test inference of train_and_evaluate runs under the same autocast, and the result says so
    use_tiny_models(monkeypatch)
    seen = []
    real = run.predict_images

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "predict_images", spy)
    for bf16 in (True, False):
        seen.clear()
        cfg = preset("smoke", 2, device="cpu", cpu_bf16=bf16)
        res = run.train_and_evaluate(cfg, tmp_path / f"run{bf16}", data_root=tmp_path / "data", progress=False)
        assert seen == [bf16]
        assert res["precision"] == ("bfloat16-autocast" if bf16 else "float32")


def test_resume_accepts_other_test_time_settings(tmp_path):
    _trainer(tmp_path, "t").fit(stop_after=1)
    t = _trainer(tmp_path, "t", tta=False, merge="nms", test_subset=5, num_threads=1)
    assert t.try_resume() and t.epoch == 1


def test_real_model_seeded_runs_are_identical(tmp_path):
    from retina_unet.pipeline import train_and_evaluate

    cfg = preset("smoke", 2, device="cpu", epochs=1, tta=False)
    a = train_and_evaluate(cfg, tmp_path / "a", data_root=tmp_path / "data", progress=False)
    b = train_and_evaluate(cfg, tmp_path / "b", data_root=tmp_path / "data", progress=False)
    strip = lambda curve: [{k: v for k, v in c.items() if not k.endswith("_s")} for c in curve]  # noqa: E731
    assert strip(a["curve"]) == strip(b["curve"]) and a["mAP"] == b["mAP"]


def test_cosine_schedule_endpoints_monotone_and_resume(tmp_path):
    cfg = TrainConfig(**{**TINY, "lr": 1e-3, "lr_schedule": "cosine", "lr_min_ratio": 0.1})
    steps = cfg.epochs * cfg.batches_per_epoch
    lrs = [learning_rate(cfg, s) for s in range(steps)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert learning_rate(cfg.replace(lr_schedule="constant"), steps - 1) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        cfg.replace(lr_schedule="step")
    # The schedule is a function of the step, so an interrupted run resumes onto the same curve.
    full = _trainer(tmp_path, "full", lr_schedule="cosine")
    full.fit()
    part = _trainer(tmp_path, "part", lr_schedule="cosine")
    part.fit(stop_after=1)
    resumed = _trainer(tmp_path, "part", lr_schedule="cosine")
    assert resumed.try_resume()
    resumed.fit()
    assert _losses(resumed.history) == _losses(full.history)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in full.history]
    assert full.history[-1]["lr"] == pytest.approx(TINY.get("lr", 1e-4) * 0.01)


def test_cosine_decay_from_holds_the_full_lr_then_decays_to_the_floor():
    """``lr_decay_from=0.625`` of 64 x 50 steps: the full lr through step 2,000 (epoch 40), then the
    half cosine, half-way down at the middle of the remaining steps, the floor at the last step."""
    cfg = TrainConfig(**{**TINY, "lr": 1e-3, "epochs": 64, "batches_per_epoch": 50, "lr_schedule": "cosine",
                         "lr_min_ratio": 0.01, "lr_decay_from": 0.625})
    last = 64 * 50 - 1
    start = 0.625 * last
    assert [learning_rate(cfg, s) for s in (0, 1000, int(start))] == [1e-3] * 3
    assert learning_rate(cfg, int(start) + 2) < 1e-3
    middle = (start + last) / 2
    assert learning_rate(cfg, middle) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert learning_rate(cfg, last) == pytest.approx(1e-5)
    lrs = [learning_rate(cfg, s) for s in range(last + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    # 0 is the decay over the whole run
    whole = cfg.replace(lr_decay_from=0.0)
    assert learning_rate(whole, last / 2) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="lr_decay_from"):
            cfg.replace(lr_decay_from=bad)


def test_training_bar_of_a_short_epoch_ends_full_with_the_mean_loss(tmp_path, monkeypatch):
    """2 steps: the bar ends at 2/2 and shows the epoch's mean loss (not the sum over a stale count)."""
    from retina_unet.training import engine

    bars = []

    class Recorder:
        def __init__(self, iterable=None, total=None, **kwargs):
            self.iterable, self.total, self.n, self.postfix, self.closed = iterable, total, 0, None, False
            bars.append(self)

        def __iter__(self):  # iterating would not publish n on fast steps (tqdm redraw interval)
            yield from self.iterable

        def set_postfix(self, values, refresh=True):
            self.postfix = (self.n, dict(values))

        def update(self, k=1):
            self.n += k

        def close(self):
            self.closed = True

        @staticmethod
        def write(*args, **kwargs):
            pass

    monkeypatch.setattr(engine, "tqdm", Recorder)
    t = _trainer(tmp_path, "bar", epochs=1, batches_per_epoch=2)
    t.progress = True
    t.fit()
    (bar,) = [b for b in bars if b.postfix is not None]  # the training bar (validation has its own)
    assert bar.n == 2 and bar.closed
    n_at_last_postfix, values = bar.postfix
    assert n_at_last_postfix == 1  # set after the second step, before its update
    assert float(values["loss"]) == pytest.approx(t.history[0]["loss"], abs=1e-3)
    assert t.history[0]["loss"] > 0


@pytest.mark.parametrize("val_from", [1, 3, 99])
def test_val_from_epoch_validates_late_epochs_only(tmp_path, monkeypatch, val_from):
    """Epochs before ``val_from_epoch`` are neither validated nor kept; the last epoch always is."""
    t = _trainer(tmp_path, f"v{val_from}", epochs=4, val_from_epoch=val_from, top_k=4)
    calls = []
    real = t.validate
    monkeypatch.setattr(t, "validate", lambda: calls.append(t.epoch + 1) or real())
    history = t.fit()
    first = min(val_from, 4)
    assert calls == list(range(first, 5))
    assert [h["val_mAP"] is None for h in history] == [e < first for e in range(1, 5)]
    assert sorted(e["epoch"] for e in t.top_k) == list(range(first, 5))
    assert all((tmp_path / f"v{val_from}" / e["path"]).is_file() for e in t.top_k)


def test_val_from_epoch_must_be_positive():
    with pytest.raises(ValueError, match="val_from_epoch"):
        TrainConfig(**{**TINY, "val_from_epoch": 0})


# --- checkpoint errors, the optimizer choice, the trainer's wiring of its config ----------------


class _Foreign:
    """Not a tensor or plain container: a checkpoint holding it must not be unpickled."""


def test_load_checkpoint_missing_file_and_map_location(tmp_path):
    import re

    missing = tmp_path / "none.pt"
    with pytest.raises(FileNotFoundError, match=rf"^checkpoint: no file at {re.escape(str(missing))}$"):
        load_checkpoint(missing)
    save_checkpoint({"t": torch.ones(2)}, tmp_path / "t.pt")
    assert load_checkpoint(tmp_path / "t.pt", map_location="meta")["t"].device.type == "meta"
    assert load_checkpoint(tmp_path / "t.pt")["t"].device.type == "cpu"


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path):
    from retina_unet.training.checkpoint import CheckpointError

    torch.save({"obj": _Foreign()}, tmp_path / "foreign.pt")  # a plain pickle, loadable with weights_only=False
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_load_checkpoint_error_names_the_file_and_the_first_line_of_the_cause(tmp_path, monkeypatch):
    from retina_unet.training.checkpoint import CheckpointError

    path = tmp_path / "x.pt"
    save_checkpoint({"v": 1}, path)

    def raising(exc):
        def load(*args, **kwargs):
            raise exc
        return load

    monkeypatch.setattr(torch, "load", raising(ValueError("first line\nsecond line")))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == (f"checkpoint: {path} cannot be read (first line); it is damaged, truncated or not a "
                              "checkpoint written by `retina-unet train`")
    assert isinstance(err.value.__cause__, ValueError)
    monkeypatch.setattr(torch, "load", raising(KeyError()))  # no text: the exception's type is named
    with pytest.raises(CheckpointError, match=r"cannot be read \(KeyError\); it is damaged"):
        load_checkpoint(path)
    monkeypatch.setattr(torch, "load", raising(OSError("x" * 200)))  # a long first line: 160 characters kept
    with pytest.raises(CheckpointError, match=r"cannot be read \(" + "x" * 160 + r"\); it is damaged"):
        load_checkpoint(path)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_make_optimizer_uses_the_configured_kind_rate_and_decay(name, cls):
    from retina_unet.training.engine import make_optimizer

    cfg = TrainConfig(**{**TINY, "optimizer": name, "lr": 0.003, "weight_decay": 0.25})
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer(cfg, [p])
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert group["params"][0] is p and len(group["params"]) == 1
    assert (group["lr"], group["weight_decay"]) == (0.003, 0.25)
    if name == "sgd":
        assert group["momentum"] == 0.9
    assert group["fused"] is True  # one kernel per step, not a Python loop over parameters


def test_make_optimizer_fused_step_matches_the_loop_implementation():
    """The fused update is the same rule as PyTorch's per-parameter loop (float32 rounding)."""
    from retina_unet.training.engine import make_optimizer

    cfg = TrainConfig(**{**TINY, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.1})
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3, generator=gen))
    b = torch.nn.Parameter(a.detach().clone())
    fused = make_optimizer(cfg, [a])
    loop = torch.optim.Adam([b], lr=0.01, weight_decay=0.1, foreach=False)
    for _ in range(5):
        g = torch.randn(5, 3, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))  # it moved


class _NoMasks(TinySegDetector):
    needs_masks = False
    has_segmentation = False


class _SegOnly(TinySegDetector):
    needs_masks = False
    has_segmentation = True


class _Bare(torch.nn.Module):  # states neither attribute
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)


class _NoMasksOnly(_Bare):  # states needs_masks only
    needs_masks = False


@pytest.mark.parametrize("model_cls, want", [(TinySegDetector, True), (_NoMasks, False), (_SegOnly, True),
                                             (_Bare, True), (_NoMasksOnly, False)])
def test_sampler_draws_masks_when_the_model_needs_them_or_segments(tmp_path, model_cls, want):
    assert _trainer(tmp_path, model_cls=model_cls).sampler.with_masks is want


def test_trainer_passes_its_config_to_the_sampler_and_the_validation_subset(tmp_path):
    t = _trainer(tmp_path, "a", class_balanced=False, patch_size=(8, 8), patch_fg_prob=0.25, seed=3, val_subset=2)
    s = t.sampler
    assert s.by_class == [] and s.patch.tolist() == [8, 8] and s.fg_prob == 0.25
    same = BatchSampler(fake_split(12), range(8), 2, 2, seed=3)
    assert torch.equal(s.generator.get_state(), same.generator.get_state())
    assert t.val_indices == [0, 1]
    assert _trainer(tmp_path, "b", val_subset=10).val_indices == list(range(6))  # 6 validation images
    assert len(_trainer(tmp_path, "c").sampler.by_class) == 2  # class-balanced by default: classes 1 and 2
    cfg = TrainConfig(**TINY)
    assert Trainer(cfg, TinySegDetector(), fake_split(12), fake_split(6), range(8), 2, tmp_path / "d").progress is True


def test_try_resume_without_a_resume_state(tmp_path):
    from retina_unet.training.checkpoint import CheckpointError

    t = _trainer(tmp_path, "fresh")
    assert t.try_resume() is False and t.epoch == 0
    out = tmp_path / "fresh"
    out.mkdir(exist_ok=True)
    for bad in ([1, 2], {"config": {}, "model": {}}):
        save_checkpoint(bad, out / "last.pt")
        with pytest.raises(CheckpointError) as err:
            t.try_resume()
        assert str(err.value) == (
            f"checkpoint: {out / 'last.pt'} is not a resume state (no model/optimizer/sampler); cannot resume the run "
            f"in {out}: start over with --no-resume (train_and_evaluate(resume=False)) or delete {out / 'last.pt'}")
    # the four keys are enough to get to the config check
    save_checkpoint({"config": {}, "model": {}, "optimizer": {}, "sampler": {}}, out / "last.pt")
    with pytest.raises(ValueError, match="different config") as err:
        t.try_resume()
    assert type(err.value) is ValueError


def test_resume_refusal_names_the_changed_field_with_both_values(tmp_path):
    _trainer(tmp_path, "r").fit(stop_after=1)
    with pytest.raises(ValueError, match=r"\(saved, now\): \{'lr': \(0\.01, 0\.5\)\}; use a fresh out_dir"):
        _trainer(tmp_path, "r", lr=0.5).try_resume()


def test_a_resumed_run_records_its_new_test_time_settings(tmp_path):
    _trainer(tmp_path, "t", epochs=2).fit(stop_after=1)
    t = _trainer(tmp_path, "t", epochs=2, tta=False)
    assert t.try_resume()
    t.fit()
    assert load_checkpoint(tmp_path / "t" / "last.pt")["config"]["tta"] is False


def test_fmt_of_validation_map():
    from retina_unet.training.engine import _fmt

    assert _fmt(None) == "n/a" and _fmt(float("nan")) == "n/a"
    assert _fmt(0.12345) == "0.123" and _fmt(1) == "1.000"


def test_each_step_trains_at_the_scheduled_rate(tmp_path):
    """The cosine schedule reaches the optimizer (not only the recorded curve): its last step runs at
    learning_rate(cfg, last step), and each epoch records the rate of its own last step."""
    t = _trainer(tmp_path, "lr", lr_schedule="cosine")
    seen = []
    step = t.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(t.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    t.optimizer.step = recording_step
    t.fit()
    bpe = t.cfg.batches_per_epoch
    assert seen == pytest.approx([learning_rate(t.cfg, s) for s in range(t.cfg.epochs * bpe)])
    assert [h["lr"] for h in t.history] == pytest.approx([learning_rate(t.cfg, e * bpe - 1) for e in (1, 2, 3)])
    assert seen[0] == pytest.approx(1e-2) and seen[-1] < seen[0]


def test_gradient_clipping_reaches_the_update(tmp_path):
    """Adam with gradients clipped to norm 1e-12: its eps (1e-8) dominates, so the weights barely move."""
    def moved(**over):
        t = _trainer(tmp_path, f"clip{len(over)}", epochs=1, **over)
        before = [p.detach().clone() for p in t.model.parameters()]
        t.fit()
        return max(float((p.detach() - b).abs().max()) for p, b in zip(t.model.parameters(), before, strict=True))

    assert moved() > 1e-3
    assert moved(grad_clip=1e-12) < 1e-5


def test_a_non_finite_loss_stops_training_with_the_losses(tmp_path):
    class NanLoss(TinySegDetector):
        def losses(self, images, targets):
            x = self.net(images).sum() * float("nan")
            return {"loss": x, "ce": torch.tensor(2.5)}

    t = _trainer(tmp_path, "nan", model_cls=NanLoss)
    with pytest.raises(FloatingPointError, match=r"^epoch 1: non-finite loss nan \(\{'loss': nan, 'ce': 2\.5\}\)$"):
        t.fit()


def test_fit_stops_after_the_asked_epochs_and_tracks_each(tmp_path):
    import csv

    t = _trainer(tmp_path, "stop")
    t.fit(stop_after=2)
    assert t.epoch == 2 and t._tracker is None
    rows = list(csv.DictReader((tmp_path / "stop" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r, h in zip(rows, t.history, strict=True):  # data time: a part of the epoch's training time
        assert 0.0 <= float(r["data_s"]) <= h["train_s"] + 1e-6


def test_the_training_bar_is_labelled_and_shown_only_with_progress(tmp_path, monkeypatch):
    from retina_unet.training import engine

    made = []
    real = engine.tqdm

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **{**kwargs, "disable": True})

    spy.write = lambda *a, **k: made.append({"write": a[0]})
    monkeypatch.setattr(engine, "tqdm", spy)
    t = _trainer(tmp_path, "bar", epochs=2, batches_per_epoch=2)
    t.progress = True
    t.fit(stop_after=1)
    bar = [k for k in made if "desc" in k][0]
    assert bar == {"total": 2, "desc": "epoch 1/2", "disable": False, "leave": False}
    assert any(k.get("write", "").startswith("epoch 1: loss ") for k in made)
    made.clear()
    t.progress = False
    t.fit(stop_after=1)
    assert [k for k in made if "desc" in k][0]["disable"] is True
    assert not any("write" in k for k in made)


def test_autocast_only_on_cuda_with_amp(tmp_path):
    import contextlib
    import warnings

    t = _trainer(tmp_path, "amp")  # amp on (default), device cpu
    assert t.cfg.amp and isinstance(t._autocast(), contextlib.nullcontext)
    t.device = torch.device("cuda")  # as on a GPU machine (nothing is run there)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on CPU-only machines
        ac = t._autocast()
    assert isinstance(ac, torch.autocast) and ac.device == "cuda" and ac.fast_dtype == torch.bfloat16
    t.cfg = t.cfg.replace(amp=False)
    assert isinstance(t._autocast(), contextlib.nullcontext)


def test_resume_state_names_the_cuda_rng(tmp_path):
    st = _trainer(tmp_path, "st").state()
    assert "cuda_rng" in st
    if not torch.cuda.is_available():
        assert st["cuda_rng"] is None


# --- the epoch record, the per-step rows, top-k files and validation, by hand -------------------


class _ScriptedLosses(TinySegDetector):
    """Optimiser step k (1-based, over the run) reports loss k, ce 10 k, box -k, cls 0.5 and seg 7;
    the weights get zero gradients. Five terms: one more than the bar shows."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def losses(self, images, targets):
        self.calls += 1
        k = float(self.calls)
        return {"loss": self.net(images).sum() * 0.0 + k, "ce": torch.tensor(10 * k), "box": torch.tensor(-k),
                "cls": torch.tensor(0.5), "seg": torch.tensor(7.0)}


class _TickingClock:
    """A perf_counter that advances by exactly 1 s per reading."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


class _BarRecorder:
    """Stands in for tqdm in the engine: records the bar's postfix (and its refresh flag) and the lines written."""

    bars: list = []
    lines: list = []

    def __init__(self, iterable=None, total=None, **kwargs):
        self.total, self.n, self.postfixes = total, 0, []
        _BarRecorder.bars.append(self)

    def set_postfix(self, values, refresh=True):
        self.postfixes.append((dict(values), refresh))

    def update(self, k=1):
        self.n += k

    def close(self):
        pass

    @staticmethod
    def write(line, *args, **kwargs):
        _BarRecorder.lines.append(line)


def _scripted_run(tmp_path, monkeypatch, maps=None, name="scripted", **over):
    """A trainer of :class:`_ScriptedLosses` on the ticking clock, with ``validate`` returning
    ``maps[completed epochs]`` as mAP (0.25 throughout by default) and per-class APs {1: 0.5, 2: 0.0}."""
    from types import SimpleNamespace

    from retina_unet.training import engine

    clock = _TickingClock()
    monkeypatch.setattr(engine, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(_BarRecorder, "bars", [])
    monkeypatch.setattr(_BarRecorder, "lines", [])
    monkeypatch.setattr(engine, "tqdm", _BarRecorder)
    t = _trainer(tmp_path, name, model_cls=_ScriptedLosses, **{"epochs": 2, **over})
    maps = maps or [0.25] * t.cfg.epochs
    monkeypatch.setattr(t, "validate", lambda: {"mAP": maps[t.epoch], "ap": {1: 0.5, 2: 0.0}})
    return t


def test_epoch_record_holds_each_mean_loss_term_val_ap_and_clocked_times(tmp_path, monkeypatch):
    # Clock readings per epoch of 3 steps: t0; per step the step start, its data end and its end
    # (data 1 s, step 2 s); then the training end (train_s = 11 - 1 = 10), t1 and the val end (1 s).
    t = _scripted_run(tmp_path, monkeypatch)
    t.fit()
    assert t.history == [
        {"epoch": 1, "loss": 2.0, "loss_ce": 20.0, "loss_box": -2.0, "loss_cls": 0.5, "loss_seg": 7.0,
         "val_mAP": 0.25, "val_ap": {1: 0.5, 2: 0.0}, "lr": 0.01, "train_s": 10.0, "val_s": 1.0},
        {"epoch": 2, "loss": 5.0, "loss_ce": 50.0, "loss_box": -5.0, "loss_cls": 0.5, "loss_seg": 7.0,
         "val_mAP": 0.25, "val_ap": {1: 0.5, 2: 0.0}, "lr": 0.01, "train_s": 10.0, "val_s": 1.0},
    ]
    assert json.loads((tmp_path / "scripted" / "history.json").read_text())[1]["loss_ce"] == 50.0


def test_every_step_is_tracked_with_its_global_step_epoch_and_times(tmp_path, monkeypatch):
    import csv

    t = _scripted_run(tmp_path, monkeypatch)
    t.fit()
    steps = list(csv.DictReader((tmp_path / "scripted" / "metrics_steps.csv").open()))
    assert [(int(r["step"]), int(r["epoch"])) for r in steps] == [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert [float(r["loss"]) for r in steps] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [float(r["loss_ce"]) for r in steps] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert {(float(r["data_s"]), float(r["step_s"])) for r in steps} == {(1.0, 2.0)}
    epochs = list(csv.DictReader((tmp_path / "scripted" / "metrics.csv").open()))
    # data time of an epoch: 3 steps x 1 s; compute: the other 7 s of the 10 s of training
    assert [(float(r["data_s"]), float(r["compute_s"])) for r in epochs] == [(3.0, 7.0), (3.0, 7.0)]


def test_the_bar_shows_the_first_four_running_means_without_forcing_a_redraw(tmp_path, monkeypatch):
    """Each step's postfix waits for the bar's own redraw (refresh=False: no terminal line per step);
    the epoch's summary line carries the mean loss, the validation mAP and the training seconds."""
    t = _scripted_run(tmp_path, monkeypatch, maps=[0.25, 0.5])
    t.progress = True
    t.fit()
    bar = _BarRecorder.bars[0]
    assert bar.postfixes == [
        ({"loss": "1.000", "ce": "10.000", "box": "-1.000", "cls": "0.500"}, False),
        ({"loss": "1.500", "ce": "15.000", "box": "-1.500", "cls": "0.500"}, False),
        ({"loss": "2.000", "ce": "20.000", "box": "-2.000", "cls": "0.500"}, False),
    ]
    assert _BarRecorder.lines == ["epoch 1: loss 2.0000  val mAP 0.250  (10s train)",
                                  "epoch 2: loss 5.0000  val mAP 0.500  (10s train)"]


def test_top_k_keeps_the_best_maps_in_files_with_their_epoch_and_map(tmp_path, monkeypatch):
    t = _scripted_run(tmp_path, monkeypatch, maps=[0.2, 0.5, 0.3], epochs=3, top_k=2)
    t.fit()
    assert t.top_k == [{"epoch": 2, "val_mAP": 0.5, "path": "epoch_002.pt"},
                       {"epoch": 3, "val_mAP": 0.3, "path": "epoch_003.pt"}]
    out = tmp_path / "scripted"
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_002.pt", "epoch_003.pt"]
    ck = load_checkpoint(out / "epoch_002.pt")
    assert set(ck) == {"config", "seed", "num_classes", "git_commit", "environment", "intensity_range", "precision",
                       "epoch", "val_mAP", "model"}
    assert (ck["epoch"], ck["val_mAP"], ck["num_classes"], ck["seed"]) == (2, 0.5, 2, 0)
    # donuts_shape: background uniform [0, 1), objects + contrast 0.2
    assert ck["intensity_range"] == [0.0, 1.2]


def test_top_k_ties_go_to_the_later_epoch(tmp_path, monkeypatch):
    t = _scripted_run(tmp_path, monkeypatch, maps=[0.4, 0.4, 0.4], epochs=3, top_k=2)
    t.fit()
    assert [e["epoch"] for e in t.top_k] == [3, 2]
    assert sorted(p.name for p in (tmp_path / "scripted").glob("epoch_*.pt")) == ["epoch_002.pt", "epoch_003.pt"]


def test_a_top_k_file_already_deleted_by_hand_does_not_stop_training(tmp_path, monkeypatch):
    t = _scripted_run(tmp_path, monkeypatch, maps=[0.2, 0.5], top_k=1)
    t.fit(stop_after=1)
    (tmp_path / "scripted" / "epoch_001.pt").unlink()  # epoch 2 then drops epoch 1, whose file is gone
    t.fit()
    assert [e["epoch"] for e in t.top_k] == [2]
    assert [p.name for p in (tmp_path / "scripted").glob("epoch_*.pt")] == ["epoch_002.pt"]


def test_the_resume_state_records_the_task_intensity_range(tmp_path):
    t = _trainer(tmp_path, "ir", epochs=1, task_overrides={"contrast": 0.5})
    t.fit()
    assert load_checkpoint(tmp_path / "ir" / "last.pt")["intensity_range"] == [0.0, 1.5]  # [0, 1) + 0.5


class _FirstStepOnly(TinySegDetector):
    """``extra`` enters the loss (with gradient 1) on the first step only."""

    def __init__(self):
        super().__init__()
        self.extra = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def losses(self, images, targets):
        out = super().losses(images, targets)
        self.calls += 1
        if self.calls == 1:
            out["loss"] = out["loss"] + self.extra.sum()
        return out


def test_a_parameter_without_gradient_in_a_step_is_not_updated_in_it(tmp_path):
    """Gradients are reset to None, not zero: Adam skips a parameter that got no gradient in a step.
    Adam's first step moves ``extra`` by lr * 1 / (1 + eps) = 0.01; the later steps leave it there
    (with zeroed gradients Adam would go on moving it by its momentum)."""
    t = _trainer(tmp_path, "skip", model_cls=_FirstStepOnly, epochs=1)
    t.fit()
    assert t.model.calls == 3 and float(t.model.extra.detach()) == pytest.approx(-0.01, abs=1e-8)


def test_save_json_writes_two_space_indented_json(tmp_path):
    from retina_unet.training.checkpoint import save_json

    save_json({"a": [1, None]}, tmp_path / "h.json")
    assert (tmp_path / "h.json").read_text() == '{\n  "a": [\n    1,\n    null\n  ]\n}\n'


def _clean_split(labels, size=16) -> FakeSplit:
    """Noise-free images: one 6x6 square of intensity ``label`` per image at rows 2-7, columns 3-8
    (label 0: an empty image with a padding entry)."""
    n = len(labels)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i, lab in enumerate(labels):
        images[i, 2:8, 3:9] = lab
        masks[i, 2:8, 3:9] = lab
    boxes = np.tile(np.array([2, 3, 8, 9], np.float32), (n, 1, 1))
    return FakeSplit(images, masks, np.array(labels).reshape(n, 1), boxes)


class _Oracle(TinySegDetector):
    """Predicts the bright square of each image exactly (its intensity as class), at score ``score``;
    counts the images it is asked about."""

    def __init__(self, score=0.5):
        super().__init__()
        self.score, self.seen = score, 0

    @torch.no_grad()
    def predict(self, images):
        self.seen += len(images)
        out = []
        for im in images:
            on = im[0] > 0
            if on.any():
                idx = torch.nonzero(on)
                box = torch.cat([idx.min(0).values, idx.max(0).values + 1]).float()[None]
                out.append({"boxes": box, "scores": torch.tensor([self.score]),
                            "labels": torch.tensor([int(im[0].max())])})
            else:
                out.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)})
        return out


def _oracle_trainer(tmp_path, labels, score=0.5, **over):
    cfg = TrainConfig(**{**TINY, **over})
    return Trainer(cfg, _Oracle(score), fake_split(12), _clean_split(labels), range(8), 2, tmp_path / "o",
                   progress=False)


def test_validation_drops_predictions_at_or_below_the_score_threshold(tmp_path):
    # exact boxes (IoU 1) at score 0.5: all dropped under threshold 0.6 (AP 0 for both classes),
    # all true positives under 0.4 (AP 1)
    t = _oracle_trainer(tmp_path, [1, 2, 1], score=0.5, score_threshold=0.6)
    res = t.validate()
    assert res["mAP"] == 0.0 and res["ap"] == {1: 0.0, 2: 0.0}
    t.cfg = t.cfg.replace(score_threshold=0.4)
    res = t.validate()
    assert res["mAP"] == 1.0 and res["ap"] == {1: 1.0, 2: 1.0}


def test_validation_without_any_object_scores_zero(tmp_path):
    """No ground truth in the validation images: mAP is undefined, counted as 0.0 (the top-k
    ranking needs a number)."""
    res = _oracle_trainer(tmp_path, [0, 0]).validate()
    assert res["mAP"] == 0.0 and type(res["mAP"]) is float


def test_validation_predicts_only_the_validation_subset(tmp_path):
    t = _oracle_trainer(tmp_path, [1, 2, 1], score=0.9, val_subset=2)
    res = t.validate()
    assert t.model.seen == 2 and res["n_images"] == 2 and res["mAP"] == 1.0


def test_a_resumed_run_saves_the_same_resume_state_fields(tmp_path):
    """Resuming re-records the config (its test-time fields may have changed), under the same key:
    the resume state holds exactly the fields of a fresh run's."""
    _trainer(tmp_path, "k", epochs=2).fit(stop_after=1)
    fresh = set(load_checkpoint(tmp_path / "k" / "last.pt"))
    assert fresh == {"config", "seed", "num_classes", "git_commit", "environment", "intensity_range", "precision", "epoch",
                     "model", "optimizer", "sampler", "torch_rng", "cuda_rng", "history", "top_k"}
    t = _trainer(tmp_path, "k", epochs=2, tta=False)
    assert t.try_resume()
    t.fit()
    assert set(load_checkpoint(tmp_path / "k" / "last.pt")) == fresh


def test_step_ab_benchmark_trains_two_identical_copies_that_differ_only_in_the_lever():
    """benchmarks/study/step_ab.py: both copies start from one initialisation and see the same
    batches and draws, so their first losses are equal; the copy without the fused optimiser
    really runs PyTorch's loop; an unknown lever is refused."""
    from benchmarks.study.loss_step import load_split
    from benchmarks.study.step_ab import time_lever
    from retina_unet.training import preset

    split, _ = load_split(preset("cpu", 2), None, generate=4)
    r = time_lever("retina_net", split, steps=2, warmup=0, lever="fused")
    assert r["loss_diff"][0] == 0.0 and len(r["loss_diff"]) == 2
    assert r["without"]["mean_ms"] > 0 and r["with"]["mean_ms"] > 0
    assert r["optimizers"] == {"without": {"class": "Adam", "fused": None, "foreach": False},
                               "with": {"class": "Adam", "fused": True, "foreach": None}}
    with pytest.raises(ValueError, match="lever must be one of"):
        time_lever("retina_net", split, steps=1, warmup=0, lever="fp8")
    # bf16: the same model and optimiser, only the forward and loss under CPU bfloat16 autocast
    r = time_lever("retina_net", split, steps=1, warmup=0, lever="bf16")
    assert r["optimizers"]["with"] == r["optimizers"]["without"]
    assert 0.0 < r["loss_diff"][0] < 0.1  # bfloat16 rounds: close, not equal
