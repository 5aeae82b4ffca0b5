"""Where the time of one training run goes: data, train steps, validation, test inference, post-processing.

Runs ``train_and_evaluate`` once per model with phase timers wrapped around the functions the run
calls (no code change in the package): dataset generation / loading, model build, batch sampling,
forward + loss, backward + optimiser step, validation (network and post-processing), test-time
inference (network, post-processing, WBC merge, NMS), evaluation (AP matching), checkpoint saving.

    python -m benchmarks.study.profile_run --models retina_unet mask_rcnn --threads 1 \
        --out reports/study_profile/profile.json

Timings of a busy machine are inflated; the shares between phases are what this is for.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import shutil
import time
from collections import defaultdict
from pathlib import Path

_TIMES: dict[str, float] = defaultdict(float)
_CALLS: dict[str, int] = defaultdict(int)
_PHASE = ["setup"]


def _timed(name: str, fn, phase: str | None = None):
    """``fn`` wrapped so that its wall time adds to ``<phase>/<name>``; with ``phase`` it also sets
    the current phase for the calls it makes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if phase is not None:
            _PHASE.append(phase)
        key = f"{_PHASE[-1]}/{name}"
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _TIMES[key] += time.perf_counter() - t0
            _CALLS[key] += 1
            if phase is not None:
                _PHASE.pop()

    return wrapper


def _instrument() -> None:
    import torch

    import retina_unet.inference.predictor as predictor
    import retina_unet.models.mask_rcnn as mask_rcnn
    import retina_unet.models.retina as retina
    import retina_unet.pipeline as pipeline
    import retina_unet.training.engine as engine
    from retina_unet import ops
    from retina_unet.rundir import RunDir

    pipeline.ensure_dataset = _timed("dataset (generate or load)", pipeline.ensure_dataset, "data")
    pipeline.predict_loaded = _timed("total", pipeline.predict_loaded, "test")
    engine.Trainer.validate = _timed("total", engine.Trainer.validate, "val")
    engine.Trainer._train_epoch = _timed("epoch incl. validation", engine.Trainer._train_epoch, "train")
    engine.evaluate_detections = _timed("evaluation (AP)", engine.evaluate_detections)
    pipeline.evaluate_detections = _timed("evaluation (AP)", pipeline.evaluate_detections)
    engine.save_checkpoint = _timed("checkpoint save", engine.save_checkpoint)
    sampler_cls = engine.BatchSampler
    sampler_cls.next_batch = _timed("batch sampling", sampler_cls.next_batch)
    for mod in (retina, mask_rcnn):
        mod.select_detections_batched = _timed("post-processing (select_detections_batched)",
                                               mod.select_detections_batched)
    for name in ("roi_align", "batched_nms"):  # the models call them as ops.<name> at call time
        setattr(ops, name, _timed(f"compiled op {name}", getattr(ops, name)))
    predictor.weighted_box_clustering_batched = _timed("WBC merge", predictor.weighted_box_clustering_batched)
    predictor.nms = _timed("NMS merge", predictor.nms)
    orig_build = pipeline.build_from_config

    def build(*args, **kwargs):
        model = _timed("model build", orig_build)(*args, **kwargs)
        _wrap_model(model)
        return model

    pipeline.build_from_config = build
    orig_load = RunDir.load_models

    def load(self, *args, **kwargs):
        out = _timed("load kept epochs", orig_load)(self, *args, **kwargs)
        for m in out.models:
            _wrap_model(m)
        return out

    RunDir.load_models = load
    torch.Tensor.backward = _timed("backward", torch.Tensor.backward)
    torch.optim.Adam.step = _timed("optimiser step", torch.optim.Adam.step)


def _wrap_model(model) -> None:
    if getattr(model, "_profiled", False):  # load_models builds through build_from_config: wrap once
        return
    model._profiled = True
    model.losses = _timed("forward + loss", model.losses)
    model.predict = _timed("predict (network + post-processing)", model.predict)


def profile(model: str, threads: int, out_dir: Path, data_root: Path, task: str, n_train: int, seed: int,
            overrides: dict) -> dict:
    import torch

    from retina_unet.pipeline import train_and_evaluate
    from retina_unet.training import preset

    _TIMES.clear()
    _CALLS.clear()
    cfg = preset("cpu", 2, model=model, task=task, n_train=n_train, seed=seed, num_threads=threads, **overrides)
    shutil.rmtree(out_dir / model, ignore_errors=True)  # a scratch folder: always a fresh run
    t0 = time.perf_counter()
    result = train_and_evaluate(cfg, out_dir / model, data_root=data_root, progress=False, resume=False)
    wall = time.perf_counter() - t0
    return {"model": model, "wall_s": wall, "mAP": result["mAP"], "threads": torch.get_num_threads(),
            "train_s": result["train_s"], "inference_s": result["test"].get("inference_s"),
            "epochs": len(result["curve"]), "phases": dict(sorted(_TIMES.items())), "calls": dict(sorted(_CALLS.items()))}


def table(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["phases"]})
    lines = ["| phase / part | " + " | ".join(r["model"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    lines.append("| **run wall time** | " + " | ".join(f"**{r['wall_s']:.0f} s**" for r in rows) + " |")
    for k in keys:
        cells = [f"{r['phases'].get(k, 0.0):.1f} s ({100 * r['phases'].get(k, 0.0) / r['wall_s']:.0f}%)" for r in rows]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["retina_unet", "mask_rcnn"])
    ap.add_argument("--task", default="donuts_shape")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--work", default="/tmp/profile_runs")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainConfig overrides (JSON values)")
    ap.add_argument("--out", required=True, help="JSON file (or, with --from-json, a Markdown file); the table is printed")
    ap.add_argument("--from-json", nargs="+", metavar="JSON", help="no run: one table from earlier --out files")
    args = ap.parse_args()
    if args.from_json:
        docs = [json.loads(Path(p).read_text()) for p in args.from_json]
        rows = [r for d in docs for r in d["runs"]]
        text = table(rows)
        Path(args.out).write_text(text + "\n")
        print(text)
        return
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        with contextlib.suppress(json.JSONDecodeError):
            v = json.loads(v)
        overrides[k] = v
    _instrument()
    rows = [profile(m, args.threads, Path(args.work), Path(args.data_root), args.task, args.n_train, args.seed, overrides)
            for m in args.models]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"platform": platform.platform(), "task": args.task, "n_train": args.n_train, "seed": args.seed,
           "overrides": overrides, "runs": rows, "table": table(rows)}
    out.write_text(json.dumps(doc, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
