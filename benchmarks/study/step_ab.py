"""CPU milliseconds per training step with and without one lever, two copies alternating in one process.

Levers (``--lever``):

- ``fused``: ``training.engine.make_optimizer``'s optimiser (PyTorch's fused implementation, one
  kernel per step) against the same optimiser as a Python loop over the parameter tensors
  (``foreach=False``);
- ``compile``: the model's network under ``torch.compile`` (inductor, default mode) against eager;
- ``bf16``: the forward and loss under CPU bfloat16 autocast (``TrainConfig.cpu_bf16``) against
  float32; only meaningful where oneDNN computes bfloat16 natively (printed; elsewhere it is emulated).

Two copies of a ``cpu``-preset model from the same initialisation train on the same batches with
the same random draws, one with the lever and one without, alternating step by step so that load
on the machine falls on both alike. Printed: CPU time (``time.process_time``) per whole step
(forward, loss, backward, optimiser step) after warm-up (for ``compile`` the first, compiling step
is timed apart), the ratio, and how far the two copies' losses drifted apart::

    python -m benchmarks.study.step_ab --data-root data --lever fused --models retina_net mask_rcnn --steps 40
    python -m benchmarks.study.step_ab --data-root data --lever compile --models retina_net --steps 30
    python -m benchmarks.study.step_ab --data-root data --lever bf16 --steps 40
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.study.loss_step import load_split, train_alternating

LEVERS = ("fused", "compile", "bf16")


def time_lever(name: str, split, steps: int, warmup: int, lever: str = "fused") -> dict:
    """Both copies of model ``name`` timed; ``out["without"]`` / ``out["with"]`` in ms per step."""
    import torch

    from retina_unet.data import BatchSampler
    from retina_unet.data.cache import task_num_classes
    from retina_unet.training import preset
    from retina_unet.training.engine import make_optimizer
    from retina_unet.training.model import build_from_config

    cfg = preset("cpu", 2, model=name)
    num_classes = task_num_classes(cfg)
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {LEVERS}, got {lever!r}")
    runs = {}
    for kind in ("without", "with"):
        model = build_from_config(cfg, num_classes, seed=cfg.seed)
        model.train()
        opt = make_optimizer(cfg, model.parameters())
        if lever == "fused" and kind == "without":  # the same optimiser and settings, as the loop
            opt = type(opt)(model.parameters(), **{**opt.defaults, "fused": None, "foreach": False})
        if lever == "compile" and kind == "with":
            model.network = torch.compile(model.network)
        runs[kind] = {"model": model, "opt": opt, "times": [], "losses": []}
        if lever == "bf16" and kind == "with":
            runs[kind]["context"] = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    sampler = BatchSampler(split, range(len(split.labels)), cfg.batch_size, num_classes, cfg.class_balanced,
                           cfg.patch_size, cfg.patch_fg_prob, seed=cfg.seed, with_masks=True)
    torch.manual_seed(cfg.seed)
    train_alternating(runs, sampler, steps, warmup)
    out = {"model": name, "optimizers": {k: {"class": type(r["opt"]).__name__, "fused": r["opt"].defaults["fused"],
                                               "foreach": r["opt"].defaults["foreach"]} for k, r in runs.items()}}
    for kind, run in runs.items():
        out[kind] = {"mean_ms": 1000 * statistics.fmean(run["times"]), "median_ms": 1000 * statistics.median(run["times"])}
    # the first step apart: for ``compile`` it is the compiling one (excluded from the mean with warmup >= 1)
    out["lever"], out["first_step_with_ms"] = lever, 1000 * runs["with"]["first_s"]
    out["ratio_mean"] = out["without"]["mean_ms"] / out["with"]["mean_ms"]
    out["loss_diff"] = [abs(a["loss"] - b["loss"])
                        for a, b in zip(runs["without"]["losses"], runs["with"]["losses"], strict=True)]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lever", choices=LEVERS, default="fused")
    p.add_argument("--models", nargs="+", default=["retina_unet", "retina_net", "mask_rcnn"])
    p.add_argument("--steps", type=int, default=40, help="timed steps per copy")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None, help="folder holding the toy dataset cache")
    p.add_argument("--generate", type=int, default=0, help="generate N samples instead of the cache")
    args = p.parse_args(argv)

    import torch

    from retina_unet.environment import cpu_has_native_bf16, cpu_model
    from retina_unet.training import preset

    torch.set_num_threads(args.threads)
    split, source = load_split(preset("cpu", 2), args.data_root, args.generate)
    print(f"data: {source}; lever {args.lever}; {args.warmup} warm-up + {args.steps} timed steps per copy, "
          f"{args.threads} thread(s); CPU {cpu_model()}, native bfloat16: {cpu_has_native_bf16()}")
    for name in args.models:
        r = time_lever(name, split, args.steps, args.warmup, args.lever)
        d = r["loss_diff"]
        print(f"{name:12s} without {r['without']['mean_ms']:6.1f} ms/step (median {r['without']['median_ms']:.1f})  "
              f"with {r['with']['mean_ms']:6.1f} ms/step (median {r['with']['median_ms']:.1f})  "
              f"ratio {r['ratio_mean']:.2f}x  first step with {r['first_step_with_ms'] or 0:.0f} ms  "
              f"loss diff step 1 {d[0]:.1e}, step 10 {d[min(9, len(d) - 1)]:.1e}, last {d[-1]:.1e}")


if __name__ == "__main__":
    main()
