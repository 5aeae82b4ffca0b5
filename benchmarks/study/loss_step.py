"""CPU seconds per training step with the batched anchor/RoI losses against the per-image reference.

Issue #14: the one-stage loss (matching, positive cap, SHEM negatives, box coding, smooth-L1), the
RPN proposals and loss, the RoI sampling and the mask-loss targets used to run one image at a time;
they now run once per batch, and the per-image code is kept as the reference
(``OneStageDetector._losses_reference``, ``RPN._proposals_reference``, ``RPN._losses_reference``,
``TwoStageDetector._sample_rois_reference``, ``TwoStageDetector._mask_loss_reference``). This
script trains two copies of each model from the same initialisation on the same batches, one per
implementation, alternating them step by step (so that load on the machine hits both alike), and
reports CPU seconds (``time.process_time``) per step: forward, loss, backward and the optimiser
step, after warm-up steps. Both copies get the same global RNG state before each step (the losses'
draws), so their first-step losses agree to float32 rounding; the ratio is printed per model.

    python -m benchmarks.study.loss_step --data-root /path/to/data \\
        --models retina_unet retina_net mask_rcnn --steps 20 --warmup 3

``--against DIR`` times another commit's tree instead of the reference, each tree in its own
subprocess, alternating (the per-image reference shares the rest of this tree, e.g. the batched
target checks; the commit before the change is the true "before")::

    git archive fcfb128 | tar -x -C /tmp/before && cp retina_unet/_C*.so /tmp/before/retina_unet/
    python -m benchmarks.study.loss_step --data-root /path/to/data --against /tmp/before

``--current-only`` times the code as it is. The batches are 64^2 patches of the 2D toy training
split (the ``cpu`` preset: batches of 16, one torch thread); without the cached dataset
``--generate N`` draws N training samples in memory instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path


def load_split(cfg, data_root: str | None, generate: int):
    """The training split of ``cfg``'s toy dataset from the cache under ``data_root``, or
    ``generate`` samples generated in memory (``toy_data.generate_sample``)."""
    import numpy as np

    import toy_data
    from retina_unet.data.cache import DEFAULT_DATA_ROOT, dataset_key

    if not generate:
        root = Path(data_root or DEFAULT_DATA_ROOT)
        for path in (root / dataset_key(cfg), root / "cache" / dataset_key(cfg)):
            if (path / "manifest.json").is_file():  # loaded read-only, never written
                return toy_data.load_dataset(path, verify=False, splits=("train",)).split("train"), str(path)
        raise SystemExit(f"no cached dataset {dataset_key(cfg)} under {root}: pass --data-root or --generate N")
    spec = toy_data.task_spec(cfg.task, dim=cfg.spatial_dims, **cfg.task_overrides)
    samples = [toy_data.generate_sample(spec, split_seed=0, index=i) for i in range(generate)]
    k = max(len(s.labels) for s in samples)
    d = cfg.spatial_dims
    labels = np.zeros((generate, k), dtype=np.int64)
    boxes = np.zeros((generate, k, 2 * d), dtype=np.float32)
    for i, s in enumerate(samples):
        labels[i, : len(s.labels)] = s.labels
        boxes[i, : len(s.labels)] = s.boxes
    split = argparse.Namespace(
        images=np.stack([s.image for s in samples]),
        masks=np.stack([s.mask for s in samples]),
        labels=labels,
        boxes=boxes,
    )
    return split, f"{generate} samples generated in memory"


def use_reference(model) -> None:
    """Switch ``model`` to the per-image loss code (instance attributes shadow the methods)."""
    if hasattr(model, "_losses_reference"):
        model.losses = model._losses_reference
    if hasattr(model, "rpn"):
        model.rpn._losses = model.rpn._losses_reference
        model.rpn._proposals = model.rpn._proposals_reference
        model._sample_rois = model._sample_rois_reference
        model._mask_loss = model._mask_loss_reference


def train_alternating(runs: dict[str, dict], sampler, steps: int, warmup: int) -> None:
    """Train every run (``{"model", "opt", "times", "losses"}``, optionally ``"context"``: a factory
    of the context the forward and loss run in, e.g. autocast) on the same ``warmup + steps``
    batches, alternating the order step by step so that load on the machine falls on all alike,
    each step from the same global RNG state (the losses' draws). Appends the CPU seconds of each
    timed step (forward, loss, backward, optimiser step) to ``times``, each step's loss values to
    ``losses``, and the first step's CPU seconds to ``first_s``."""
    import torch

    names = list(runs)
    for step in range(warmup + steps):
        images, targets = sampler.next_batch()
        rng = torch.get_rng_state()
        for name in names if step % 2 == 0 else names[::-1]:
            run = runs[name]
            torch.set_rng_state(rng)
            t0 = time.process_time()
            with run.get("context", contextlib.nullcontext)():
                losses = run["model"].losses(images, targets)
            run["opt"].zero_grad(set_to_none=True)
            losses["loss"].backward()
            run["opt"].step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            dt = time.process_time() - t0
            if step == 0:
                run["first_s"] = dt
            if step >= warmup:
                run["times"].append(dt)
            run["losses"].append(values)


def time_model(name: str, split, steps: int, warmup: int, batch_size: int, current_only: bool) -> dict:
    import torch

    from retina_unet.data import BatchSampler
    from retina_unet.data.cache import task_num_classes
    from retina_unet.training import preset
    from retina_unet.training.engine import make_optimizer
    from retina_unet.training.model import build_from_config

    cfg = preset("cpu", 2, model=name, batch_size=batch_size)
    num_classes = task_num_classes(cfg)
    impls = ["current"] if current_only else ["reference", "batched"]
    runs = {}
    for impl in impls:
        model = build_from_config(cfg, num_classes, seed=cfg.seed)
        if impl == "reference":
            use_reference(model)
        model.train()
        runs[impl] = {"model": model, "opt": make_optimizer(cfg, model.parameters()), "times": [], "losses": []}
    sampler = BatchSampler(
        split,
        range(len(split.labels)),
        cfg.batch_size,
        num_classes,
        cfg.class_balanced,
        cfg.patch_size,
        cfg.patch_fg_prob,
        seed=cfg.seed,
        with_masks=True,
    )
    torch.manual_seed(cfg.seed)
    train_alternating(runs, sampler, steps, warmup)
    out = {"model": name}
    for impl in impls:
        t = runs[impl]["times"]
        out[impl] = {"mean_s": statistics.fmean(t), "median_s": statistics.median(t), "steps": len(t), "times_s": t}
    if not current_only:
        out["ratio_mean"] = out["reference"]["mean_s"] / out["batched"]["mean_s"]
        out["ratio_median"] = out["reference"]["median_s"] / out["batched"]["median_s"]
        # the two copies train apart: equal losses at step 1 (same weights, same draws), then
        # apart by float32 rounding (sums in another order) that training amplifies
        diffs = [
            max(abs(r[k] - b[k]) for k in r)
            for r, b in zip(runs["reference"]["losses"], runs["batched"]["losses"], strict=True)
        ]
        out["first_step_max_abs_loss_diff"] = diffs[0]
        out["last_step_max_abs_loss_diff"] = diffs[-1]
    return out


def compare_trees(args) -> None:
    """This tree against ``args.against``: each round runs both (order alternating) as subprocesses
    with ``--current-only``; the step times of all rounds are pooled per model and tree."""
    import os
    import subprocess
    import sys
    import tempfile

    here = str(Path(__file__).resolve().parents[2])
    trees = {"before": str(Path(args.against).resolve()), "after": here}
    times: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    passthrough = ["--models", *args.models, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    passthrough += ["--data-root", args.data_root] if args.data_root else []
    passthrough += ["--generate", str(args.generate)] if args.generate else []
    for r in range(args.rounds):
        for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                env = dict(os.environ, PYTHONPATH=trees[label])
                cmd = [sys.executable, str(Path(__file__).resolve()), "--current-only", "--out", str(out), *passthrough]
                subprocess.run(cmd, cwd=trees[label], env=env, check=True, stdout=subprocess.DEVNULL)
                for res in json.loads(out.read_text())["results"]:
                    times[label].setdefault(res["model"], []).extend(res["current"]["times_s"])
    print(f"before: {trees['before']}\nafter:  {trees['after']}\n{args.rounds} rounds x {args.steps} steps, "
          f"{args.threads} thread(s)")
    results = []
    for name in args.models:
        b, a = times["before"][name], times["after"][name]
        row = {
            "model": name,
            "before": {"mean_s": statistics.fmean(b), "median_s": statistics.median(b), "steps": len(b)},
            "after": {"mean_s": statistics.fmean(a), "median_s": statistics.median(a), "steps": len(a)},
        }
        row["ratio_mean"] = row["before"]["mean_s"] / row["after"]["mean_s"]
        row["ratio_median"] = row["before"]["median_s"] / row["after"]["median_s"]
        results.append(row)
        print(
            f"{name:12s} before {row['before']['mean_s'] * 1000:7.1f} ms/step (median {row['before']['median_s'] * 1000:.1f})"
            f"  after {row['after']['mean_s'] * 1000:7.1f} ms/step (median {row['after']['median_s'] * 1000:.1f})"
            f"  ratio {row['ratio_mean']:.2f}x (median {row['ratio_median']:.2f}x)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": vars(args), "results": results}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["retina_unet", "retina_net", "mask_rcnn"])
    p.add_argument("--steps", type=int, default=20, help="timed steps per model and implementation")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None, help="folder holding the toy dataset cache")
    p.add_argument("--generate", type=int, default=0, help="generate N samples instead of the cache")
    p.add_argument("--current-only", action="store_true", help="time the code as is, no reference")
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument(
        "--against",
        default=None,
        help="source tree of another commit (e.g. the one before the change, from git archive, with the "
        "built extension copied in): time it and this tree with --current-only in alternating subprocesses",
    )
    p.add_argument("--rounds", type=int, default=2, help="with --against: alternating rounds per tree")
    args = p.parse_args(argv)
    if args.against:
        compare_trees(args)
        return

    import torch

    from retina_unet.training import preset

    torch.set_num_threads(args.threads)
    split, source = load_split(preset("cpu", 2), args.data_root, args.generate)
    print(f"data: {source}; batches of {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{args.threads} thread(s)")
    results = []
    for name in args.models:
        r = time_model(name, split, args.steps, args.warmup, args.batch_size, args.current_only)
        results.append(r)
        if args.current_only:
            print(f"{name:12s} {r['current']['mean_s'] * 1000:7.1f} ms/step (median {r['current']['median_s'] * 1000:.1f})")
        else:
            ref, new = r["reference"], r["batched"]
            print(
                f"{name:12s} per-image {ref['mean_s'] * 1000:7.1f} ms/step (median {ref['median_s'] * 1000:.1f})  "
                f"batched {new['mean_s'] * 1000:7.1f} ms/step (median {new['median_s'] * 1000:.1f})  "
                f"ratio {r['ratio_mean']:.2f}x (median {r['ratio_median']:.2f}x)  "
                f"loss diff step 1 {r['first_step_max_abs_loss_diff']:.1e}, last {r['last_step_max_abs_loss_diff']:.1e}"
            )
    if args.out:
        meta = {"argv": vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
