"""Training-step speed of the model zoo, side by side, on this machine's CPU (or a GPU).

For MobileNet-v1 alone, the joint Anscombe network + MobileNet-v1 and the Chen U-Net +
MobileNet-v1: forward + cross-entropy + backward images/s at ``--size`` px and batch
``--batch``, in the default (NCHW) memory format and channels-last, with each model's ratio to
MobileNet-v1 alone. Then the fixed conventional ISP's forward time per image for each denoiser,
beside MobileNet-v1's forward time per image (the ISP should cost well under the classifier).

Usage::

    python benchmarks/bench_models.py [--size 128] [--batch 32] [--iters 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

import torch


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
