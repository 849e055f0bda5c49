"""The reproduction study of the paper's Table 1 on Imagenette: train every model, then evaluate.

Runs one ``dpcal train`` after another in the background-friendly way a study needs: each run
writes its own folder under ``--runs`` (default ``runs/table1``), finished runs (``model.pt``
present) are skipped, an interrupted run is resumed exactly (``--resume``), and the log of each
run goes to ``RUNS/NAME.log``. Rerun the same command after any interruption (a closed session,
``kill``, a reboot) and it continues where it stopped. ``--plan`` prints the commands only.

Setting (docs/results.md): Imagenette (10 classes; train split to train, val split to
evaluate), camera ``nexus6p-rear``, ``--sim-mode reference``, 128 px, the default recipe, the
same number of optimiser steps (``--epochs``) for every model; at 3 lux: the clean classifier
(the ceiling and the initialisation of the ISP baselines and of the joint model), joint (two
seeds), MobileNet-v1 from scratch on RAW (two seeds), the same initialised from the clean
classifier, conventional ISP + the clean classifier as is and fine-tuned, Chen U-Net + fine-tuned
classifier; at 2-200 lux: joint and RAW from scratch. Then ``dpcal eval`` of each model on the
val split at its lux (and a lux sweep) into ``RUNS/eval``.

Usage::

    nohup python benchmarks/study_table1.py --data ../shared/data/imagenette160 > study.log 2>&1 &
    python benchmarks/study_table1.py --plan
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (name, mode, lux, seed, init) in the order they run: the most informative first.
RUNS = [
    ("clean", "clean", "3", 0, None),
    ("raw-3lux-s0", "raw", "3", 0, None),
    ("joint-3lux-s0", "joint", "3", 0, "clean"),
    ("isp-asis-3lux", "isp", "3", 0, "clean"),
    ("isp-ft-3lux", "isp", "3", 0, "clean"),
    ("raw-init-3lux", "raw", "3", 0, "clean"),
    ("joint-3lux-s1", "joint", "3", 1, "clean"),
    ("raw-3lux-s1", "raw", "3", 1, None),
    ("unet-ft-3lux", "unet", "3", 0, "clean"),
    ("joint-2-200lux", "joint", "2 200", 0, "clean"),
    ("raw-2-200lux", "raw", "2 200", 0, None),
]


def train_command(name: str, mode: str, lux: str, seed: int, init: str | None, a) -> list[str]:
    run = a.runs / name
    cmd = [sys.executable, "-m", "dpcal", "train", "--mode", mode, "--data", str(a.data / "train"),
           "--val-data", str(a.data / "val"), "--val-max", str(a.val_max), "--profile", "nexus6p-rear",
           "--lux", *lux.split(), "--sim-mode", "reference", "--size", "128", "--batch-size", str(a.batch),
           "--seed", str(seed), "--workers", str(a.workers), "--checkpoint-every", "50", "--out", str(run)]
    cmd += ["--steps", "0"] if name.startswith("isp-asis") else ["--epochs", str(a.epochs)]
    if init:
        cmd += ["--init", str(a.runs / init)]
    if (run / "checkpoints" / "last.pt").is_file():
        cmd = [sys.executable, "-m", "dpcal", "train", "--out", str(run), "--resume"]
    return cmd


#: Evaluations: (name, runs, lux options). Each is redone when a run of its list has finished since.
EVALS = [
    ("3lux", [r[0] for r in RUNS if r[2] == "3"], ["--lux", "3"]),
    ("2-200lux", ["joint-2-200lux", "raw-2-200lux"], ["--lux", "2", "200"]),
    ("sweep", ["joint-3lux-s0", "raw-3lux-s0", "joint-2-200lux", "raw-2-200lux"], ["--lux-sweep", "2,3,6,20,200"]),
]


def evaluate(a) -> int:
    """``dpcal eval`` of the finished runs of each group on the val split (seed 0), into RUNS/eval/GROUP."""
    for group, names, lux in EVALS:
        done = [n for n in names if (a.runs / n / "model.pt").is_file()]
        if not done:
            continue
        out = a.runs / "eval" / group
        stamp = out / "models.txt"
        if stamp.is_file() and stamp.read_text().split() == done:
            print(f"eval {group}: up to date", flush=True)
            continue
        cmd = [sys.executable, "-m", "dpcal", "eval", *[str(a.runs / n) for n in done], "--data", str(a.data / "val"),
               *lux, "--seed", "0", "--workers", str(a.workers), "--report", str(out), "--overwrite",
               "--predictions", str(a.runs / "eval" / f"{group}-predictions.csv"), "--json"]
        if a.plan:
            print(shlex.join(cmd))
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"eval {group}: {shlex.join(cmd)}", flush=True)
        with open(a.runs / "eval" / f"{group}.json", "w") as f, open(a.runs / "eval" / f"{group}.log", "a") as log:
            r = subprocess.run(cmd, stdout=f, stderr=log, cwd=ROOT)
        if r.returncode != 0:
            print(f"eval {group}: exit {r.returncode}", flush=True)
            return r.returncode
        stamp.write_text("\n".join(done) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette160")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "table1")
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--val-max", type=int, default=1000)
    ap.add_argument("--only", nargs="*", help="Run only these names.")
    ap.add_argument("--plan", action="store_true", help="Print the commands and exit.")
    ap.add_argument("--no-eval", action="store_true", help="Train only.")
    a = ap.parse_args()
    a.runs.mkdir(parents=True, exist_ok=True)
    for name, mode, lux, seed, init in RUNS:
        if a.only and name not in a.only:
            continue
        run = a.runs / name
        cmd = train_command(name, mode, lux, seed, init, a)
        if a.plan:
            print(("# done: " if (run / "model.pt").is_file() else "") + shlex.join(cmd))
            continue
        if (run / "model.pt").is_file():
            print(f"{name}: done, skipped", flush=True)
            continue
        if init and not (a.runs / init / "model.pt").is_file():
            print(f"{name}: waiting for {init}; skipped this pass", flush=True)
            continue
        t0 = time.time()
        print(f"{name}: {shlex.join(cmd)}", flush=True)
        with open(a.runs / f"{name}.log", "a") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ})
        print(f"{name}: exit {r.returncode} after {time.time() - t0:.0f} s", flush=True)
        if r.returncode != 0:
            return r.returncode
    return 0 if a.no_eval else evaluate(a)


if __name__ == "__main__":
    sys.exit(main())
