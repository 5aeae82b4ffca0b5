"""CPU seconds per 3D training step of a model in the 3D ``cpu`` size, with model fields overridden.

One batch of ``--batch`` 32^3 uniform-noise patches with one centred 19^3 object (box and mask)
each, Adam, one torch thread; ``time.process_time`` over ``--steps`` steps after 2 warm-up steps.
Used for the 3D channels-last row of docs/speed.md:

    python -m benchmarks.study.step_time_3d retina_unet --set channels_last=False
    python -m benchmarks.study.step_time_3d retina_unet --set channels_last=True
    python -m benchmarks.study.step_time_3d retina_unet --bf16    # forward and loss under CPU bfloat16 autocast
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import time

import torch

from retina_unet.models import build_model, model_config


def step_time(name: str, overrides: dict, batch: int = 8, steps: int = 4, bf16: bool = False) -> float:
    """Mean CPU seconds of one forward + loss + backward + Adam step (forward and loss under CPU
    bfloat16 autocast with ``bf16``, as ``TrainConfig.cpu_bf16`` trains)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(name, model_config(3, "cpu", **overrides))
    images = torch.rand(batch, 1, 32, 32, 32)
    mask = torch.zeros(32, 32, 32, dtype=torch.uint8)
    mask[6:25, 6:25, 6:25] = 1
    box = torch.tensor([[6.0, 6, 6, 25, 25, 25]])
    targets = [{"boxes": box, "labels": torch.tensor([1]), "masks": mask} for _ in range(batch)]
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model.losses(images, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="ModelConfig override")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--bf16", action="store_true", help="forward and loss under CPU bfloat16 autocast")
    args = ap.parse_args()
    overrides = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    t = step_time(args.model, overrides, args.batch, args.steps, args.bf16)
    print(f"{args.model} {overrides} batch {args.batch}{' bf16' if args.bf16 else ''}: {t:.3f} CPU-s/step")


if __name__ == "__main__":
    main()
