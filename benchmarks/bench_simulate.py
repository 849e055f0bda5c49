"""Throughput of ``dpcal simulate`` vs a straightforward implementation of the reference pipeline.

Both run in this one process, side by side, on the same ImageNet-size JPEGs (looped several
times), from JPEG to 128 x 128 noisy mosaics written to disk:

* baseline: what the Dirty Pixels reference script does, written plainly in numpy/OpenCV in one
  process: full decode, central crop 0.875, nearest resize, Poisson-Gaussian noise drawn for all
  three channels then masked to BGGR, one PNG written per image (8-bit, 3 channels, as the
  reference script writes them);
* dpcal: ``simulate_dataset`` (realistic and reference modes) with worker processes: DCT-domain
  JPEG downscaling, noise only at CFA sites, 16-bit single-channel PNGs, manifest and card;
  end-to-end time including worker start-up (torch import), discovery and the manifest.

Usage::

    python benchmarks/bench_simulate.py [--src ../shared/data/imagenet_val_sample] [--loops 50] [--workers 2]
                                        [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_source(src: Path, dst: Path, loops: int) -> int:
    """Class folders of symlinks: every image of ``src`` ``loops`` times under different names."""
    n = 0
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        out = dst / d.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(d.iterdir()):
            for r in range(loops):
                (out / f"{r:03d}_{f.name}").symlink_to(f.resolve())
                n += 1
    return n


def baseline(src: Path, out: Path, size: int = 128, lux=(2.0, 20.0), seed: int = 0) -> int:
    """The reference pipeline written plainly (single process)."""
    import cv2

    alpha100, sigma100 = 1.8724e-4, 4.733e-4  # Nexus 6P rear at ISO 100 (light level 1)
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size, 3), np.float32)  # BGGR: B G / G R
    mask[1::2, 1::2, 0] = 1
    mask[1::2, ::2, 1] = 1
    mask[::2, 1::2, 1] = 1
    mask[::2, ::2, 2] = 1
    n = 0
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        (out / d.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(d.iterdir()):
            img = cv2.imread(str(f))[..., ::-1].astype(np.float32) / 255  # full decode
            h, w = img.shape[:2]
            y0, x0 = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)
            img = img[y0 : h - y0, x0 : w - x0]
            iy = (np.arange(size) * img.shape[0]) // size
            ix = (np.arange(size) * img.shape[1]) // size
            img = img[iy][:, ix]
            ll = lux[0] / 2000 * np.exp(rng.uniform(0, np.log(lux[1] / lux[0])))
            a, s = alpha100 / ll, sigma100 / ll
            noisy = rng.poisson(np.maximum(img / a, 0)) * a + s * rng.standard_normal(img.shape)  # 3 channels
            noisy = np.clip(noisy, 0, 1) * mask
            cv2.imwrite(str(out / d.name / (f.stem + ".png")), (255 * noisy).astype(np.uint8)[..., ::-1])
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "imagenet_val_sample"))
    ap.add_argument("--loops", type=int, default=50)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--lux", type=float, nargs=2, default=(2.0, 20.0))
    ap.add_argument("--tmpdir", help="where to write the outputs (default: the system temporary folder)")
    args = ap.parse_args()

    import cv2

    from dpcal.workflows.simulate import simulate_dataset

    cv2.setNumThreads(1)
    src = Path(args.src)
    if not src.is_dir():
        raise SystemExit(f"{src} not found (pass --src with ImageNet-style class folders of JPEGs)")
    tmp = Path(tempfile.mkdtemp(prefix="dpcal-bench-", dir=args.tmpdir))
    try:
        n = make_source(src, tmp / "src", args.loops)
        print(f"{n} images ({args.loops} x {src}), 128 x 128 mosaics, lux {args.lux[0]:g}-{args.lux[1]:g}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
        rows = []
        t, c = time.perf_counter(), time.process_time()
        baseline(tmp / "src", tmp / "baseline", lux=tuple(args.lux))
        rows.append(("baseline: reference pipeline, plain (1 process)", time.perf_counter() - t, None))
        base_cpu = (time.process_time() - c) / n
        for label, kw in [
            (f"dpcal simulate realistic, {args.workers} workers", dict(workers=args.workers)),
            (f"dpcal simulate reference, {args.workers} workers", dict(workers=args.workers, mode="reference")),
            ("dpcal simulate realistic, 1 worker", dict(workers=1)),
        ]:
            t = time.perf_counter()
            res = simulate_dataset(tmp / "src", tmp / label.split(",")[0].replace(" ", "_") / str(kw["workers"]),
                                   lux=tuple(args.lux), progress=False, **kw)
            r = res["run"]
            rows.append((label, time.perf_counter() - t, r["work_s"] - r["first_result_s"]))
            assert res["counts"]["ok"] == n
        # CPU time per image (this process, workers=0): what the work costs, whatever else runs.
        import torch

        torch.set_num_threads(1)
        cpu = {}
        for mode in ("realistic", "reference"):
            c = time.process_time()
            simulate_dataset(tmp / "src", tmp / f"cpu_{mode}", lux=tuple(args.lux), progress=False, workers=0, mode=mode)
            cpu[mode] = (time.process_time() - c) / n
        base = n / rows[0][1]
        print(f"{'pipeline':<48} {'images/s':>9} {'x baseline':>10}   (end to end; after the first chunk)")
        for label, secs, steady in rows:
            rate = n / secs
            extra = f"   {n / steady:7.0f} img/s  ({secs - steady:.1f} s to start)" if steady else ""
            print(f"{label:<48} {rate:9.0f} {rate / base:10.2f}{extra}")
        ncpu = os.cpu_count()
        print(f"CPU time per image: baseline {base_cpu * 1e3:.2f} ms (1 process: {1 / base_cpu:.0f} img/s on a free core); "
              f"dpcal realistic {cpu['realistic'] * 1e3:.2f} ms, reference {cpu['reference'] * 1e3:.2f} ms "
              f"({ncpu} free cores: {ncpu / cpu['realistic']:.0f} and {ncpu / cpu['reference']:.0f} img/s, "
              f"{ncpu / cpu['realistic'] * base_cpu:.1f}x and {ncpu / cpu['reference'] * base_cpu:.1f}x the baseline)")
        print(f"load average {os.getloadavg()[0]:.2f} at end (other processes on the machine slow every row)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
