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


def _time(fn, iters: int, warmup: int = 2) -> float:
    """Fastest of ``iters`` timed calls: on a shared machine the minimum is the least disturbed."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def train_step_rate(name: str, size: int, batch: int, iters: int, channels_last: bool, device: str) -> float:
    """Images per second of forward + cross-entropy + backward for a preset."""
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
        if device != "cpu":
            torch.cuda.synchronize()

    return batch / _time(step, iters)


def forward_ms(module, inputs, iters: int, device: str) -> float:
    """Milliseconds per image of a no-grad forward pass."""
    module.eval()

    def run():
        with torch.no_grad():
            module(*inputs)
        if device != "cpu":
            torch.cuda.synchronize()

    return 1000 * _time(run, iters) / inputs[0].shape[0]


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
          f"{args.size} px, batch {args.batch}, fastest of {args.iters} timed steps after 2 warm-up steps, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"\n{'model':<24} {'NCHW img/s':>11} {'ch-last img/s':>14} {'ratio to mobilenet_v1 (best of both)':>38}")
    base = None
    for name in ("mobilenet_v1", "joint", "chen_unet-mobilenet_v1"):
        rates = [train_step_rate(name, args.size, args.batch, args.iters, cl, args.device) for cl in (False, True)]
        base = base or max(rates)
        print(f"{name:<24} {rates[0]:>11.1f} {rates[1]:>14.1f} {max(rates) / base:>38.2f}")

    clf = MobileNetV1(1000).to(args.device)
    clf_ms = forward_ms(clf, example_inputs(clf, args.size, batch=args.batch, device=args.device), args.iters, args.device)
    print(f"\n{'forward, no grad':<34} {'ms/image':>9} {'ratio to MobileNet-v1 forward':>31}")
    print(f"{'MobileNet-v1':<34} {clf_ms:>9.2f} {1.0:>31.2f}")
    for denoise in ("nlm", "bilateral", "none"):
        isp = ConventionalISP("BGGR", denoise=denoise).to(args.device)
        ms = forward_ms(isp, example_inputs(isp, args.size, batch=args.batch, device=args.device), args.iters, args.device)
        print(f"{'conventional ISP, denoise=' + denoise:<34} {ms:>9.2f} {ms / clf_ms:>31.2f}")
    if args.images.is_dir():
        isp_psnr(args.images, args.n_images, args.size)
    else:
        print(f"\n(no images at {args.images}: PSNR section skipped)")


if __name__ == "__main__":
    main()
