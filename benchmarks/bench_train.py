"""Training throughput, side by side in one process: MobileNet-v1 alone, joint, U-Net + MobileNet-v1,
and the on-the-fly data pipeline alone.

All at the same size and batch (default 128 px, batch 32), on this machine's threads:

* ``mobilenet_v1``: a MobileNet-v1 (1000 classes) training step on clean RGB batches (the
  baseline every other figure is divided by);
* ``joint``: the Anscombe network + MobileNet-v1, forward and backward through both;
* ``unet``: Chen et al.'s U-Net + MobileNet-v1 (both trained);
* ``raw``: MobileNet-v1 on the 3-channel mosaic;
* ``pipeline``: what the loader delivers per second with ``--workers`` processes: JPEG decode,
  crop/resize, and the simulator (``SimulateCollate``), with no training running.

Each training figure is images per second over ``--steps`` steps after ``--warmup`` steps, with
channels-last memory (``--no-channels-last`` to compare). The goals (issue 10): the pipeline
delivers at least 2x what joint training consumes, and joint runs at >= 0.6x MobileNet-v1.

Usage::

    python benchmarks/bench_train.py [--src ../shared/data/imagenette160/train] [--size 128] [--batch 32]
                                     [--steps 10] [--warmup 3] [--workers 1] [--no-channels-last]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _fake_source(n: int = 256) -> Path:
    import cv2

    d = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rng = np.random.default_rng(0)
    for c in range(4):
        (d / f"c{c}").mkdir()
        for i in range(n // 4):
            cv2.imwrite(str(d / f"c{c}" / f"{i}.jpg"), rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
    return d


def train_rate(spec: dict, size: int, batch: int, steps: int, warmup: int, channels_last: bool, rgb: bool) -> float:
    from dpcal.learn.models import build_model

    torch.manual_seed(0)
    model = build_model(spec)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    if rgb:
        x = (torch.rand(batch, 3, size, size, generator=g),)
        if channels_last:
            x = (x[0].contiguous(memory_format=torch.channels_last),)
    else:
        x = (torch.rand(batch, 1, size, size, generator=g), torch.full((batch, 4), 0.05), torch.full((batch, 4), 0.1))
    y = torch.randint(0, 1000, (batch,), generator=g)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(*x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def _one_thread(_):
    torch.set_num_threads(1)


def pipeline_rate(src: Path, size: int, batch: int, batches: int, workers: int) -> float:
    from dpcal.learn.data import ImageDataset, SimulateCollate, open_source
    from dpcal.profile import load_profile
    from dpcal.sim.config import SimConfig

    s = open_source(src)
    prof = load_profile("nexus6p-rear")
    sim = SimConfig(mode="reference", lux=(3, 3)).resolve(prof).to_dict()
    ds = ImageDataset(s, size, "train", "reference", "none", 0, epoch=0)
    idx = np.random.default_rng(0).permutation(len(s))[: batch * (batches + 2)].tolist()
    bs = [idx[i * batch:(i + 1) * batch] for i in range(batches + 2)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=bs, collate_fn=SimulateCollate(prof.doc, sim),
                                         num_workers=workers, multiprocessing_context="forkserver" if workers else None,
                                         worker_init_fn=_one_thread if workers else None,
                                         prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it), next(it)  # start-up and warm-up
    t0 = time.perf_counter()
    n = sum(len(b["label"]) for b in it)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_src = ROOT.parent / "shared" / "data" / "imagenette160" / "train"
    ap.add_argument("--src", type=Path, default=default_src if default_src.is_dir() else None)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-channels-last", action="store_true")
    a = ap.parse_args()
    src = a.src or _fake_source()
    cl = not a.no_channels_last
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{a.size} px, batch {a.batch}, channels_last={cl}; data {src}")
    v1 = {"name": "mobilenet_v1", "kwargs": {"num_classes": 1000}}
    pipe = lambda isp: {"name": "pipeline", "kwargs": {"isp": isp, "classifier": v1, "pattern": "BGGR"}}  # noqa: E731
    rows = [
        ("mobilenet_v1 (clean RGB)", v1, True),
        ("raw mosaic + mobilenet_v1", pipe(None), False),
        ("joint (Anscombe + mobilenet_v1)", pipe({"name": "anscombe", "kwargs": {"pattern": "BGGR"}}), False),
        ("Chen U-Net + mobilenet_v1", pipe({"name": "chen_unet", "kwargs": {"pattern": "BGGR"}}), False),
    ]
    rates = {}
    for name, spec, rgb in rows:
        rates[name] = train_rate(spec, a.size, a.batch, a.steps, a.warmup, cl, rgb)
    base = rates["mobilenet_v1 (clean RGB)"]
    print(f"{'training step':36s} {'images/s':>9s} {'vs mobilenet_v1':>16s}")
    for name, r in rates.items():
        print(f"{name:36s} {r:9.1f} {r / base:15.2f}x")
    p = pipeline_rate(src, a.size, a.batch, max(8, a.steps), a.workers)
    joint = rates["joint (Anscombe + mobilenet_v1)"]
    print(f"{'data pipeline (' + str(a.workers) + ' worker(s))':36s} {p:9.1f} {p / joint:15.2f}x joint's consumption")
    print(f"goals: pipeline >= 2x joint: {'met' if p >= 2 * joint else 'NOT met'}; "
          f"joint >= 0.6x mobilenet_v1: {'met' if joint >= 0.6 * base else 'NOT met'}")


if __name__ == "__main__":
    main()
