"""Training-step speed of the model zoo, side by side, on this machine's CPU (or a GPU).

For MobileNet-v1 alone, the joint Anscombe network + MobileNet-v1 and the Chen U-Net +
MobileNet-v1: forward + cross-entropy + backward images/s at ``--size`` px and batch
``--batch``, in the default (NCHW) memory format and channels-last, with each model's ratio to
MobileNet-v1 alone. Then the fixed conventional ISP's forward time per image for each denoiser,
beside MobileNet-v1's forward time per image (the ISP should cost well under the classifier),
and, when ``--images`` holds class folders of images (e.g. Imagenette), the ISP's PSNR against
the clean images at 3, 6 and 60 lux (reference-mode simulation, Nexus 6P rear noise) with and
without its denoiser.

Usage::

    python benchmarks/bench_models.py [--size 128] [--batch 32] [--iters 5] [--device cpu] [--threads N]
                                      [--images ../shared/data/imagenette160/val] [--n-images 16]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _interleaved_best(fns: dict, iters: int, warmup: int = 2) -> dict:
    """Fastest call of each function, timed round-robin.

    Interleaving gives every candidate the same share of a shared machine's quiet moments, and
    the minimum over rounds is the least disturbed time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(iters):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def train_step(name: str, size: int, batch: int, channels_last: bool, device: str):
    """A closure running forward + cross-entropy + backward of a preset on a fixed batch."""
    from dpcal.learn.models import build_model, example_inputs, preset

    torch.manual_seed(0)
    model = build_model(preset(name, 1000)).to(device).train()
    inputs = example_inputs(model, size, batch=batch, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(*inputs), labels).backward()
        _sync(device)

    return step


def forward_only(module, inputs, device: str):
    """A closure running a no-grad forward pass."""
    module.eval()

    def run():
        with torch.no_grad():
            module(*inputs)
        _sync(device)

    return run


def isp_psnr(folder: Path, n: int, size: int) -> None:
    """PSNR (dB, mean over images) of the conventional ISP's output against the clean images."""
    import numpy as np
    from PIL import Image

    from dpcal.learn.models import ConventionalISP
    from dpcal.sim import Simulator

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[:: max(1, len(files) // n)][:n]
    images = torch.stack([
        torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC))).permute(2, 0, 1)
        for f in files
    ]).float() / 255
    print(f"\nconventional ISP PSNR (dB) on {len(files)} images of {folder} at {size} px, reference-mode simulation")
    print(f"{'lux':>5} " + " ".join(f"{d:>10}" for d in ("none", "nlm", "bilateral")))
    for lux in (3.0, 6.0, 60.0):
        sim = Simulator("nexus6p-rear", mode="reference", lux=(lux, lux))
        out = sim(images, generator=torch.Generator().manual_seed(0))
        row = []
        for denoise in ("none", "nlm", "bilateral"):
            isp = ConventionalISP(sim.config.pattern, denoise=denoise, tone="none", white_balance="none")
            mse = (isp(out.mosaic, out.alpha, out.sigma) - images).square().mean(dim=(1, 2, 3))
            row.append((10 * torch.log10(1 / mse)).mean().item())
        print(f"{lux:>5g} " + " ".join(f"{v:>10.2f}" for v in row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette160" / "val")
    ap.add_argument("--n-images", type=int, default=16)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from dpcal.learn.models import ConventionalISP, MobileNetV1, example_inputs

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{args.size} px, batch {args.batch}, fastest of {args.iters} round-robin timed steps after 2 warm-up steps, "
          f"load average {os.getloadavg()[0]:.1f}")
    names = ("mobilenet_v1", "joint", "chen_unet-mobilenet_v1")
    steps = {(n, cl): train_step(n, args.size, args.batch, cl, args.device) for n in names for cl in (False, True)}
    rate = {k: args.batch / t for k, t in _interleaved_best(steps, args.iters).items()}
    print(f"\n{'forward + backward':<24} {'NCHW img/s':>11} {'ch-last img/s':>14} {'ratio to mobilenet_v1 (same format)':>37}")
    for n in names:
        ratios = "  ".join(f"{rate[n, cl] / rate['mobilenet_v1', cl]:.2f}" for cl in (False, True))
        print(f"{n:<24} {rate[n, False]:>11.1f} {rate[n, True]:>14.1f} {ratios:>37}")

    clf = MobileNetV1(1000).to(args.device)
    runs = {"MobileNet-v1": forward_only(clf, example_inputs(clf, args.size, batch=args.batch, device=args.device), args.device)}
    for denoise in ("nlm", "bilateral", "none"):
        isp = ConventionalISP("BGGR", denoise=denoise).to(args.device)
        runs[f"conventional ISP, denoise={denoise}"] = forward_only(
            isp, example_inputs(isp, args.size, batch=args.batch, device=args.device), args.device)
    ms = {k: 1000 * t / args.batch for k, t in _interleaved_best(runs, args.iters).items()}
    print(f"\n{'forward, no grad':<34} {'ms/image':>9} {'ratio to MobileNet-v1 forward':>31}")
    for k, v in ms.items():
        print(f"{k:<34} {v:>9.2f} {v / ms['MobileNet-v1']:>31.2f}")
    if args.images.is_dir():
        isp_psnr(args.images, args.n_images, args.size)
    else:
        print(f"\n(no images at {args.images}: PSNR section skipped)")


if __name__ == "__main__":
    main()
