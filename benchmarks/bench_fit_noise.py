"""Benchmark: single-image noise fit of a 12-megapixel RAW (dpcal fit-noise --method single).

Times, in one process and side by side,

* **dpcal**: ``read_raw`` + hygiene + level sets (float32, OpenCV box filters, ``np.bincount``)
  + robust ML fit, refinement and block jackknife, for all four planes; the median of
  ``--repeat`` runs after a warm-up run (imports), wall and CPU time;
* **baseline**: a straightforward implementation of the same wavelet route (float64 arrays,
  ``scipy.ndimage`` filters, per-pixel ``np.interp`` thresholds, one boolean selection per level
  bin), followed by the same ML fit, without refinement or jackknife.

Both get the same synthetic 12 MP DNG (a natural-ish scene with flat areas, and a gray chart)
unless ``--raw FILE`` is given. Run from the repository root::

    python benchmarks/bench_fit_noise.py            # 12 MP synthetic natural scene and chart
    python benchmarks/bench_fit_noise.py --raw photo.dng --no-baseline
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_raws(folder: Path, h: int, w: int) -> dict[str, Path]:
    from dpcal.io.dng import write_dng
    from dpcal.testing.scenes import natural_scene
    from dpcal.testing.captures import gray_chart, synthetic_capture

    alpha = {"R": 2.4e-3, "Gr": 1.5e-3, "Gb": 1.6e-3, "B": 3.0e-3}
    sigma = {"R": 6e-3, "Gr": 4e-3, "Gb": 4.2e-3, "B": 7e-3}
    out = {}
    nat = natural_scene(h, w, rng=1)
    chart, _ = gray_chart(h, w, np.linspace(-0.05, 1.05, 30))
    for name, clean in (("natural", nat), ("chart", chart)):
        dn = synthetic_capture(clean, "RGGB", alpha, sigma, black_level=64, white_level=4095, rng=2)
        p = folder / f"{name}_{h * w / 1e6:.0f}mp.dng"
        write_dng(p, dn, "RGGB", black_level=64, white_level=4095, iso=800)
        out[name] = p
    return out


def run_dpcal(path: Path) -> dict:
    from dpcal.io.raw import read_raw
    from dpcal.noise.hygiene import prepare_capture
    from dpcal.noise.single import CaptureSets

    r = read_raw(path)
    prep = prepare_capture(r.dn, r.pattern, r.black_level, r.white_level)
    cs = CaptureSets()
    cs.add(prep.planes, prep.lo, prep.hi, valid=prep.valid)
    return {p: f.alpha for p, f in cs.fit().items()}


def run_baseline(path: Path) -> dict:
    """The same wavelet route written the straightforward way."""
    from scipy import ndimage

    from dpcal.cfa import PLANES, split_planes
    from dpcal.io.raw import read_raw
    from dpcal.noise.fit import fit_levelsets
    from dpcal.noise.levelsets import KAPPA_HAAR, LevelSets, unbiased_std
    from dpcal.noise.single import ENERGY_DOF2, _chi2_ratio_ppf, _measure_norms, energy_limit

    r = read_raw(path)
    P = split_planes(r.normalized().astype(np.float64), r.pattern)
    out = {}
    for i, name in enumerate(PLANES):
        p = np.clip(P[i], 0, 1)
        A = (p[:-1, :-1] + p[:-1, 1:] + p[1:, :-1] + p[1:, 1:]) / 4
        D = (p[:-1, :-1] - p[:-1, 1:] - p[1:, :-1] + p[1:, 1:]) / 2
        S = ndimage.uniform_filter(A, 5, mode="reflect")
        E = ndimage.uniform_filter(D * D, 13, mode="reflect")
        E2 = ndimage.uniform_filter(D * D, 31, mode="reflect")
        gx = np.zeros_like(S)
        gy = np.zeros_like(S)
        lap = np.zeros_like(S)
        gx[:, 2:-2] = S[:, 4:] - S[:, :-4]
        gy[2:-2, :] = S[4:, :] - S[:-4, :]
        lap[2:-2, 2:-2] = S[2:-2, 4:] + S[2:-2, :-4] + S[4:, 2:-2] + S[:-4, 2:-2] - 4 * S[2:-2, 2:-2]
        # preliminary curve: 10 % quantile of E2 in 32 level bins
        a, e = S[::4, ::4].ravel(), E2[::4, ::4].ravel()
        order = np.argsort(a)
        chunks = np.array_split(order, 32)
        lv = np.array([np.median(a[c]) for c in chunks])
        sd = np.array([np.sqrt(np.quantile(e[c], 0.1) / _chi2_ratio_ppf(0.1, ENERGY_DOF2)) for c in chunks])
        sig = np.interp(S, lv, sd)
        ng, nl = _measure_norms()
        m = (np.abs(gx) <= 3 * ng * sig) & (np.abs(gy) <= 3 * ng * sig) & (np.abs(lap) <= 3 * nl * sig)
        m &= (E <= energy_limit() * sig**2) & (E2 <= energy_limit(dof=ENERGY_DOF2) * sig**2)
        m[:15, :] = m[-15:, :] = m[:, :15] = m[:, -15:] = False
        am, dm, sm = A[m], D[m], S[m]
        ids = np.clip(((sm - 0) * 600).astype(int), 0, 599)
        lev, std, n = [], [], []
        for k in range(600):
            sel = ids == k
            if sel.sum() < 64:
                continue
            n.append(sel.sum())
            lev.append(am[sel].mean())
            std.append(unbiased_std(dm[sel].var(ddof=1), (sel.sum() - 1) / KAPPA_HAAR))
        n = np.array(n, float)
        k = len(n)
        sets = LevelSets(np.array(lev), np.array(std), n, 1 / n, KAPPA_HAAR / (2 * (n - 1)), np.zeros(k), np.ones(k),
                         np.zeros(k, int))
        out[name] = fit_levelsets(sets).alpha
    return out


def timed(fn, path, repeat):
    walls, cpus, res = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        res = fn(path)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, help="time this RAW file instead of the synthetic ones")
    ap.add_argument("--size", default="3000x4000", help="HxW of the synthetic captures (default 12 MP)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.raw:
            raws = {args.raw.name: args.raw}
        else:
            h, w = (int(v) for v in args.size.lower().split("x"))
            raws = make_raws(Path(tmp), h, w)
        t0 = time.perf_counter()
        run_dpcal(next(iter(raws.values())))  # warm-up: imports, caches
        print(f"warm-up (first call, with imports): {time.perf_counter() - t0:.2f} s")
        for name, path in raws.items():
            mp = None
            try:
                from dpcal.io.raw import read_raw

                rr = read_raw(path)
                mp = rr.width * rr.height / 1e6
            except Exception:  # noqa: BLE001 - only for the label
                pass
            wall, cpu, res = timed(run_dpcal, path, args.repeat)
            line = f"{name}: {mp:.1f} MP  dpcal {wall:.2f} s wall ({cpu:.2f} s CPU)"
            if not args.no_baseline:
                bwall, bcpu, bres = timed(run_baseline, path, 1)
                line += f"  | baseline {bwall:.2f} s wall ({bcpu:.2f} s CPU)  | ratio {bwall / wall:.1f}x"
                agree = max(abs(res[p] / bres[p] - 1) for p in res)
                line += f"  | alpha agreement {agree:.1%}"
            print(line)
            print("   alpha: " + ", ".join(f"{p} {a:.4g}" for p, a in res.items()))


if __name__ == "__main__":
    main()
