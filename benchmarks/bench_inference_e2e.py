"""What the compiled ops buy end to end: Retina U-Net 3D inference on a batch of toy volumes.

Prints, measured in one run on one device (all variants interleaved within each repetition):
  - reference / compiled: time of ``model.predict`` with our compiled kernels vs inside
    ``retina_unet.ops.reference_ops()`` (pure PyTorch), end to end; of its post-processing alone;
    and of the test-time pipeline (4 mirrorings + WBC, = 4 x (forward + post-processing) + WBC);
  - the share of inference time spent in post-processing: everything after the network forward
    (anchors, decoding, score floor, top-k, NMS), timed by replaying cached network outputs; for
    the pipeline, post-processing plus WBC.

Usage::

    python benchmarks/bench_inference_e2e.py [--device cuda] [--size cpu|paper|tiny] [--batch 4]
        [--volume 64] [--reps 5] [--checkpoint runs/x/epoch_006.pt] [--json out.json]

An untrained network (default) scores many anchors above the floor, so NMS sees up to
``pre_nms_top_k`` candidates per image: the heavy end of post-processing. ``--checkpoint`` times
trained weights instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # toy_data from the checkout

from retina_unet import build_info
from retina_unet.inference import Predictor
from retina_unet.models import build_model, model_config
from retina_unet.ops import kernel_version, reference_ops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, device, reps: int, warmup: int = 1) -> dict:
    """Median seconds of each ``fns[name]()``; the calls alternate within each repetition so that a
    change of machine load (a shared CPU) hits every variant alike. CUDA synchronised."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


class _Cached(torch.nn.Module):
    """Stands in for the network: returns precomputed outputs, so ``predict`` times post-processing only."""

    def __init__(self, network, out):
        super().__init__()
        self.inner, self.out = network, out

    def __getattr__(self, name):  # the detector reads e.g. network.backbone.strides, network.seg_head
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def forward(self, x):
        return self.out


def _with_backend(fn, reference: bool):
    def call():
        with reference_ops(reference):
            return fn()

    return call


def toy_volumes(n: int, size: int) -> torch.Tensor:
    import toy_data

    spec = toy_data.task_spec("donuts_shape", dim=3, size=size)
    arrays = toy_data.generate_split(spec, 1234, n)
    return torch.from_numpy(arrays["images"]).float()[:, None]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default="cpu", help="model size preset: tiny | cpu | paper")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--volume", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = build_model("retina_unet", model_config(3, args.size))
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["model"])
    model = model.to(device).eval()
    images = toy_volumes(args.batch, args.volume).to(device)
    predictor = Predictor([model], tta=True, merge="wbc")

    with torch.no_grad():
        network = model.network
        outputs = network(images)
        views = [
            predictor.models[0].predict(images.flip([2 + a for a in v]) if v else images)
            for v in predictor.views
        ]
        members = [[(m, views[m][b]) for m in range(len(views))] for b in range(images.shape[0])]

        def post_only():
            model.network = _Cached(network, outputs)
            try:
                return model.predict(images)
            finally:
                model.network = network

        def merge():
            return [predictor._merge(m) for m in members]

        fns = {"network": lambda: network(images)}
        for b, ref in (("compiled", False), ("reference", True)):
            fns[f"predict_{b}"] = _with_backend(lambda: model.predict(images), ref)
            fns[f"post_{b}"] = _with_backend(post_only, ref)
            fns[f"wbc_{b}"] = _with_backend(merge, ref)
        t = interleaved(fns, device, args.reps)
        n_det = sum(len(p["scores"]) for p in model.predict(images))
    rows = {}
    for b in ("compiled", "reference"):
        predict_sum = t["network"] + t[f"post_{b}"]
        pipeline = len(predictor.views) * predict_sum + t[f"wbc_{b}"]
        rows[b] = {
            "predict_s": t[f"predict_{b}"],
            "post_s": t[f"post_{b}"],
            "wbc_s": t[f"wbc_{b}"],
            "pipeline_s": pipeline,
            "detections": n_det,
            "post_share_predict": t[f"post_{b}"] / predict_sum,
            "post_share_pipeline": (len(predictor.views) * t[f"post_{b}"] + t[f"wbc_{b}"]) / pipeline,
        }
    net = t["network"]
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "build_info": build_info().__dict__,
        "kernels": kernel_version(),
        "threads": torch.get_num_threads(),
        "model": f"retina_unet 3D size={args.size}",
        "batch": args.batch,
        "volume": args.volume,
        "trained": bool(args.checkpoint),
        "network_s": net,
        **rows,
        "speedup_post": t["post_reference"] / t["post_compiled"],
        "speedup_predict": t["predict_reference"] / t["predict_compiled"],
        "speedup_pipeline": rows["reference"]["pipeline_s"] / rows["compiled"]["pipeline_s"],
    }
    print(
        f"Retina U-Net 3D ({args.size}), batch {args.batch} x {args.volume}^3 on {result['device']}, "
        f"{'trained' if args.checkpoint else 'untrained'} weights, {n_det} detections, median of {args.reps} "
        f"interleaved repetitions"
    )
    print(f"  network forward           {net * 1e3:9.1f} ms")
    for b in ("compiled", "reference"):
        r = rows[b]
        print(
            f"  {b:9s} predict {r['predict_s'] * 1e3:9.1f} ms, post-processing {r['post_s'] * 1e3:8.1f} ms "
            f"({r['post_share_predict']:.1%} of predict); TTA x{len(predictor.views)} + WBC "
            f"{r['pipeline_s'] * 1e3:9.1f} ms (post-processing + WBC {r['post_share_pipeline']:.1%})"
        )
    print(
        f"  reference / compiled: post-processing {result['speedup_post']:.2f}x, predict (end to end) "
        f"{result['speedup_predict']:.2f}x, TTA+WBC pipeline {result['speedup_pipeline']:.2f}x"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
