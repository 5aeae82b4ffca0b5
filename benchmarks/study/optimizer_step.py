"""CPU milliseconds per training step with PyTorch's fused optimiser against its per-parameter loop.

``training.engine.make_optimizer`` builds the fused implementation (one kernel per step). This
script trains two copies of a ``cpu``-preset model from the same initialisation on the same
batches, one with ``make_optimizer``'s optimiser and one with the same optimiser as a Python loop
over the parameter tensors (``foreach=False``), alternating step by step so that load on the
machine falls on both alike, and prints CPU time (``time.process_time``) per whole step (forward,
loss, backward, optimiser step), the ratio, and how far the two copies' losses drifted apart::

    python -m benchmarks.study.optimizer_step --data-root data --models retina_net mask_rcnn --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import time


def time_optimizers(name: str, split, steps: int, warmup: int) -> dict:
    import torch

    from retina_unet.data import BatchSampler
    from retina_unet.data.cache import task_num_classes
    from retina_unet.training import preset
    from retina_unet.training.engine import make_optimizer
    from retina_unet.training.model import build_from_config

    cfg = preset("cpu", 2, model=name)
    num_classes = task_num_classes(cfg)
    runs = {}
    for kind in ("loop", "fused"):
        model = build_from_config(cfg, num_classes, seed=cfg.seed)
        model.train()
        opt = make_optimizer(cfg, model.parameters())
        if kind == "loop":  # the same optimiser and settings, as the per-parameter loop
            opt = type(opt)(model.parameters(), **{**opt.defaults, "fused": None, "foreach": False})
        runs[kind] = {"model": model, "opt": opt, "times": [], "losses": []}
    sampler = BatchSampler(split, range(len(split.labels)), cfg.batch_size, num_classes, cfg.class_balanced,
                           cfg.patch_size, cfg.patch_fg_prob, seed=cfg.seed, with_masks=True)
    torch.manual_seed(cfg.seed)
    for step in range(warmup + steps):
        images, targets = sampler.next_batch()
        rng = torch.get_rng_state()
        for kind in ("loop", "fused") if step % 2 == 0 else ("fused", "loop"):
            run = runs[kind]
            torch.set_rng_state(rng)  # the same draws (SHEM, RoI sampling) for both copies
            t0 = time.process_time()
            losses = run["model"].losses(images, targets)
            run["opt"].zero_grad(set_to_none=True)
            losses["loss"].backward()
            run["opt"].step()
            dt = time.process_time() - t0
            if step >= warmup:
                run["times"].append(dt)
            run["losses"].append(float(losses["loss"].detach()))
    out = {"model": name, "optimizers": {k: {"class": type(r["opt"]).__name__, "fused": r["opt"].defaults["fused"],
                                               "foreach": r["opt"].defaults["foreach"]} for k, r in runs.items()}}
    for kind, run in runs.items():
        out[kind] = {"mean_ms": 1000 * statistics.fmean(run["times"]), "median_ms": 1000 * statistics.median(run["times"])}
    out["ratio_mean"] = out["loop"]["mean_ms"] / out["fused"]["mean_ms"]
    out["loss_diff"] = [abs(a - b) for a, b in zip(runs["loop"]["losses"], runs["fused"]["losses"], strict=True)]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["retina_unet", "retina_net", "mask_rcnn"])
    p.add_argument("--steps", type=int, default=40, help="timed steps per copy")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None, help="folder holding the toy dataset cache")
    p.add_argument("--generate", type=int, default=0, help="generate N samples instead of the cache")
    args = p.parse_args(argv)

    import torch

    from benchmarks.study.loss_step import load_split
    from retina_unet.training import preset

    torch.set_num_threads(args.threads)
    split, source = load_split(preset("cpu", 2), args.data_root, args.generate)
    print(f"data: {source}; {args.warmup} warm-up + {args.steps} timed steps per copy, {args.threads} thread(s)")
    for name in args.models:
        r = time_optimizers(name, split, args.steps, args.warmup)
        d = r["loss_diff"]
        print(f"{name:12s} loop {r['loop']['mean_ms']:6.1f} ms/step (median {r['loop']['median_ms']:.1f})  "
              f"fused {r['fused']['mean_ms']:6.1f} ms/step (median {r['fused']['median_ms']:.1f})  "
              f"ratio {r['ratio_mean']:.2f}x  loss diff step 1 {d[0]:.1e}, step 10 {d[min(9, len(d) - 1)]:.1e}, "
              f"last {d[-1]:.1e}")


if __name__ == "__main__":
    main()
