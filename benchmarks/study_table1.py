"""The reproduction study of the paper's Table 1 on Imagenette: train every model, evaluate each.

Runs one ``dpcal train`` after another, then ``dpcal eval`` of that run on the whole val split,
and records the outcome in ``--results`` (default ``docs/results/table1/NAME.json``, tracked in
git: the trained weights are not, the numbers are). A study spans several working sessions, and
a session's machine may not keep the run folders, so:

- a run whose record exists for the current budget (``--epochs``, ``--batch``) is done and skipped;
- an interrupted run (``RUNS/NAME/checkpoints/last.pt``) is resumed exactly (``--resume``);
- the ``clean`` classifier initialises several runs: when one of those is still to do and
  ``clean``'s weights are gone, ``clean`` is trained again with the same seed (training is
  deterministic on one machine) and its new accuracy is checked against its record.

Rerun the same command after any interruption and it continues where it stopped. ``--plan``
prints the commands; ``--table`` prints the Markdown table of the records next to the paper's
numbers and writes the accuracy-vs-lux plot; ``--report DIR`` runs one ``dpcal eval`` of the
3-lux runs whose weights are present (side-by-side table, plots and image panel).

Setting (docs/results.md): Imagenette (10 classes; train split to train, val split to
evaluate), camera ``nexus6p-rear``, ``--sim-mode reference``, 128 px, the default recipe, the
same number of optimiser steps for every model; at 3 lux: the clean classifier (the ceiling and
the initialisation of the ISP baselines and of the joint model), joint (two seeds), MobileNet-v1
from scratch on RAW (two seeds), the same initialised from the clean classifier, conventional
ISP + the clean classifier as is and fine-tuned, Chen U-Net + fine-tuned classifier; at 2-200
lux: joint and RAW from scratch.

Usage::

    nohup python benchmarks/study_table1.py --data DATA/imagenette160 > study.log 2>&1 &
    python benchmarks/study_table1.py --plan
    python benchmarks/study_table1.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpcal.io.atomic import write_json_atomic  # noqa: E402

#: (name, mode, lux, seed, init) in the order they run: the most informative first.
RUNS = [
    ("clean", "clean", "3", 0, None),
    ("joint-3lux-s0", "joint", "3", 0, "clean"),
    ("raw-3lux-s0", "raw", "3", 0, None),
    ("isp-asis-3lux", "isp", "3", 0, "clean"),
    ("raw-init-3lux", "raw", "3", 0, "clean"),
    ("isp-ft-3lux", "isp", "3", 0, "clean"),
    ("joint-3lux-s1", "joint", "3", 1, "clean"),
    ("raw-3lux-s1", "raw", "3", 1, None),
    ("unet-ft-3lux", "unet", "3", 0, "clean"),
    ("joint-2-200lux", "joint", "2 200", 0, "clean"),
    ("raw-2-200lux", "raw", "2 200", 0, None),
    ("raw-init-2-200lux", "raw", "2 200", 0, "clean"),  # separates initialisation at 2-200 lux too
    ("raw-init-3lux-s1", "raw", "3", 1, "clean"),  # the seed spread of the initialised pipelines
    ("isp-ft-3lux-s1", "isp", "3", 1, "clean"),
]

#: Runs also evaluated over a lux sweep (on an evenly spread subset of the val split).
SWEEP = ["joint-3lux-s0", "raw-3lux-s0", "joint-2-200lux", "raw-2-200lux", "raw-init-2-200lux"]
SWEEP_LUX = "2,3,6,20,200"

#: The paper's Table 1 (simulated ImageNet, 1,000 classes), top-1 / top-5 in %.
PAPER = {
    "isp-asis-3lux": {"3": (0.22, 0.46), "2 200": (18.20, 32.04)},
    "isp-ft-3lux": {"3": (20.02, 39.56), "2 200": (23.47, 43.77)},
    "raw": {"3": (23.53, 44.13), "2 200": (42.65, 66.13)},
    "unet-ft-3lux": {"3": (29.89, 52.62), "2 200": (20.23, 39.35)},
    "joint": {"3": (30.50, 53.28), "2 200": (48.46, 71.44)},
}

ROWS = [  # (table row, run names by column "3" and "2 200", paper key)
    ("MobileNet-v1 on clean images (the ceiling)", {"clean": ["clean"]}, None),
    ("conventional ISP + the clean classifier, as is", {"3": ["isp-asis-3lux"]}, "isp-asis-3lux"),
    ("conventional ISP + fine-tuned classifier", {"3": ["isp-ft-3lux", "isp-ft-3lux-s1"]}, "isp-ft-3lux"),
    ("MobileNet-v1 from scratch on RAW", {"3": ["raw-3lux-s0", "raw-3lux-s1"], "2 200": ["raw-2-200lux"]}, "raw"),
    ("MobileNet-v1 on RAW, initialised from the clean classifier",
     {"3": ["raw-init-3lux", "raw-init-3lux-s1"], "2 200": ["raw-init-2-200lux"]}, None),
    ("Chen U-Net + fine-tuned classifier", {"3": ["unet-ft-3lux"]}, "unet-ft-3lux"),
    ("joint Anscombe + MobileNet-v1", {"3": ["joint-3lux-s0", "joint-3lux-s1"], "2 200": ["joint-2-200lux"]}, "joint"),
]


def dpcal(*args: str) -> list[str]:
    return [sys.executable, "-m", "dpcal", *args]


def train_command(name: str, mode: str, lux: str, seed: int, init: str | None, a) -> list[str]:
    """The command that starts the run (``dpcal train --out RUN --resume`` continues it)."""
    run = a.runs / name
    cmd = dpcal("train", "--mode", mode, "--data", str(a.data / "train"), "--val-data", str(a.data / "val"),
                "--val-max", str(a.val_max), "--profile", "nexus6p-rear", "--lux", *lux.split(),
                "--sim-mode", "reference", "--size", "128", "--batch-size", str(a.batch), "--seed", str(seed),
                "--workers", str(a.workers), "--checkpoint-every", "50", "--out", str(run))
    cmd += ["--steps", "0"] if name.startswith("isp-asis") else ["--epochs", f"{a.epochs:g}"]
    if init:
        cmd += ["--init", str(a.runs / init)]
    return cmd


def eval_commands(name: str, lux: str, a) -> dict[str, list[str]]:
    """The evaluations recorded for a run: at its own light level on the whole val split, and for
    the runs of ``SWEEP`` over ``SWEEP_LUX`` on ``--sweep-images`` images."""
    run, val = str(a.runs / name), str(a.data / "val")
    cmds = {"eval": dpcal("eval", run, "--data", val, "--lux", *lux.split(), "--seed", "0",
                          "--workers", str(a.workers), "--json")}
    if name in SWEEP:
        cmds["sweep"] = dpcal("eval", run, "--data", val, "--lux-sweep", SWEEP_LUX, "--seed", "0",
                              "--max-images", str(a.sweep_images), "--workers", str(a.workers), "--json")
    return cmds


def record_path(name: str, a) -> Path:
    return a.results / f"{name}.json"


def load_record(name: str, a) -> dict | None:
    p = record_path(name, a)
    if not p.is_file():
        return None
    rec = json.loads(p.read_text())
    return rec if (rec["epochs"], rec["batch"]) == (a.epochs, a.batch) else None


def run_logged(cmd: list[str], log: Path, stdout=None) -> int:
    print(f"  $ {shlex.join(cmd)}", flush=True)
    with open(log, "a") as f:
        return subprocess.run(cmd, stdout=stdout or f, stderr=f, cwd=ROOT).returncode


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return r.stdout.strip()


def train_and_record(spec: tuple, a) -> int:
    name, mode, lux, seed, init = spec
    run = a.runs / name
    if not (run / "model.pt").is_file():
        resume = (run / "config.json").is_file()  # with or without a checkpoint yet
        cmd = dpcal("train", "--out", str(run), "--resume") if resume else train_command(*spec, a)
        t0 = time.time()
        rc = run_logged(cmd, a.runs / f"{name}.log")
        print(f"{name}: train exit {rc} after {time.time() - t0:.0f} s", flush=True)
        if rc:
            return rc
    summary = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    rec = {"name": name, "mode": mode, "lux": lux, "seed": seed, "init": init, "epochs": a.epochs,
           "batch": a.batch, "steps": summary["steps"],
           "train_command": as_typed(train_command(*spec, _relative(a))),
           "config": config, "train": summary, "date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cpus, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"}
    for key, cmd in eval_commands(name, lux, a).items():
        t0 = time.time()
        with tempfile.TemporaryFile("w+") as out:
            rc = run_logged(cmd, a.runs / f"{name}.log", stdout=out)
            if rc:
                print(f"{name}: {key} exit {rc}", flush=True)
                return rc
            out.seek(0)
            result = json.load(out)["results"][0]
        result.pop("classes", None)
        rec[key] = {"command": as_typed(eval_commands(name, lux, _relative(a))[key]),
                    "wall_s": round(time.time() - t0, 1), **result}
        print(f"{name}: {key} top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} ({rec[key]['wall_s']} s)", flush=True)
    old = load_record(name, a)
    if old:  # a retrained run: it must give its recorded numbers again; the record is kept
        same = old["eval"]["top1"] == rec["eval"]["top1"] and old["eval"]["top5"] == rec["eval"]["top5"]
        print(f"{name}: retrained, top-1 {rec['eval']['top1']:.4f} "
              f"{'equals' if same else 'DIFFERS FROM'} the record's {old['eval']['top1']:.4f}", flush=True)
    else:  # atomically: an interrupted study never leaves a record that looks complete
        record_path(name, a).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record_path(name, a), rec)
    return 0


def _relative(a):
    """The same settings with the placeholders the docs use for the data and run folders."""
    return argparse.Namespace(**{**vars(a), "data": Path("DATA/imagenette160"), "runs": Path("runs/table1")})


def as_typed(cmd: list[str]) -> str:
    """A command as a user types it: ``dpcal ...``, not the interpreter running the module."""
    return shlex.join(["dpcal", *cmd[3:]] if cmd[1:3] == ["-m", "dpcal"] else cmd)


def study(a) -> int:
    todo = [s for s in RUNS if (not a.only or s[0] in a.only) and load_record(s[0], a) is None]
    needed = {s[4] for s in todo if s[4]}
    for spec in RUNS:
        name = spec[0]
        if a.only and name not in a.only and name not in needed:
            continue
        have = load_record(name, a) is not None
        trained = (a.runs / name / "model.pt").is_file()
        if have and not (name in needed and not trained):
            print(f"{name}: recorded, skipped", flush=True)
            continue
        if a.plan:
            print(f"# {name}: trained" if trained else shlex.join(train_command(*spec, a)))
            for cmd in eval_commands(name, spec[2], a).values():
                print(shlex.join(cmd))
            continue
        what = "retraining (it initialises other runs)" if have else "evaluating" if trained else "training"
        print(f"{name}: {what}", flush=True)
        rc = train_and_record(spec, a)
        if rc:
            return rc
    return 0


# -- the table and the plot from the records --------------------------------------------------------
def _cell(names: list[str], a) -> str:
    """The recorded top-1 / top-5 of these runs (seeds side by side), or *to do*."""
    done = [r for r in (load_record(n, a) for n in names) if r]
    if not done:
        return "*to do*"
    s = " · ".join(f"{100 * r['eval']['top1']:.2f} / {100 * r['eval']['top5']:.2f}" for r in done)
    if len(done) < len(names):
        s += " · *to do*"
    return s


def table(a) -> str:
    lines = ["| model | clean images | 3 lux | 2-200 lux | paper, 3 lux | paper, 2-200 lux |", "|---|---|---|---|---|---|"]
    for label, cols, paper in ROWS:
        cells = [_cell(cols[c], a) if c in cols else "" for c in ("clean", "3", "2 200")]
        p = PAPER.get(paper, {}) if paper else {}
        pc = [f"{p[c][0]:.2f} / {p[c][1]:.2f}" if c in p else "—" for c in ("3", "2 200")]
        lines.append(f"| {label} | " + " | ".join(cells + pc) + " |")
    return "\n".join(lines)


def runs_table(a) -> str:
    """One row per recorded run: budget, wall time, speed, accuracy, when and at which commit."""
    lines = ["| run | mode | lux | seed | init | steps | train wall | images/s | eval top-1 / top-5 (n) | date, commit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, mode, lux, seed, init in RUNS:
        r = load_record(name, a)
        if not r:
            continue
        t, e = r["train"], r["eval"]
        lines.append(f"| {name} | {mode} | {lux.replace(' ', '-')} | {seed} | {init or '-'} | {r['steps']} | "
                     f"{t['wall_s'] / 60:.1f} min | {t['images_per_s'] or '-'} | {100 * e['top1']:.2f} / "
                     f"{100 * e['top5']:.2f} ({e['n']}) | {r['date']}, {r['commit']} |")
    return "\n".join(lines)


def plot_sweep(a, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name in SWEEP:
        rec = load_record(name, a)
        if not rec or "sweep" not in rec:
            continue
        pts = [(p["lux"], 100 * p["top1"]) for p in rec["sweep"]["per_lux"]]
        ax.plot(*zip(*pts), marker="o", ls="-" if name.startswith("joint") else "--", label=name)
    clean = load_record("clean", a)
    if clean:
        ax.axhline(100 * clean["eval"]["top1"], color="gray", lw=1, label="clean ceiling")
    ax.axhline(10, color="gray", lw=1, ls=":", label="chance")
    ax.set(xscale="log", xlabel="illuminance (lux)", ylabel="top-1 (%)",
           title=f"Imagenette val ({a.sweep_images} images), nexus6p-rear, {a.epochs:g} epochs")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def report(a) -> int:
    """One ``dpcal eval`` of the 3-lux runs of seed 0 whose weights are here: the side-by-side table and
    the image panel of what each pipeline hands its classifier (the paper's Figure 5)."""
    names = [s[0] for s in RUNS
             if s[2] == "3" and s[3] == 0 and s[0] != "clean" and (a.runs / s[0] / "model.pt").is_file()]
    if not names:
        print("no trained 3-lux runs to report on", file=sys.stderr)
        return 1
    cmd = dpcal("eval", *[str(a.runs / n) for n in names], "--data", str(a.data / "val"), "--lux", "3", "--seed", "0",
                "--max-images", str(a.sweep_images), "--workers", str(a.workers), "--report", str(a.report), "--overwrite")
    return run_logged(cmd, a.runs / "report.log")


#: Paired comparisons (same images, same noise): each group is evaluated in one ``dpcal eval``
#: with ``--predictions``, and every run is compared with the first (the joint model).
PAIRED = {
    "3": ["joint-3lux-s0", "raw-init-3lux", "isp-ft-3lux", "unet-ft-3lux", "raw-3lux-s0"],
    "2 200": ["joint-2-200lux", "raw-init-2-200lux", "raw-2-200lux"],
}


def paired_stats(correct_a, correct_b) -> dict:
    """Accuracy difference of two classifiers on the same images, with McNemar's exact test.

    ``b``: images only A gets right, ``c``: only B. The difference is ``(b - c) / n``; its
    standard error ``sqrt(b + c - (b - c)^2 / n) / n``; the two-sided p-value is the binomial
    test of ``b`` in ``b + c`` at one half.
    """
    import numpy as np
    from scipy.stats import binomtest

    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = a.size
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    diff = (b - c) / n
    se = float(np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n)
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"n": n, "only_first": b, "only_second": c, "diff": diff, "diff_se": se, "p_mcnemar": float(p)}


def paired(a) -> int:
    """Evaluate each PAIRED group together on the whole val split with per-image predictions;
    record the paired differences to the first run of the group in ``RESULTS/paired.json``."""
    import pandas as pd

    doc = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "groups": []}
    for lux, names in PAIRED.items():
        names = [n for n in names if (a.runs / n / "model.pt").is_file()]
        if len(names) < 2:
            print(f"{lux} lux: fewer than two trained runs, skipped", file=sys.stderr)
            continue
        if run_logged(paired_command(names, lux, a), a.runs / "paired.log"):
            return 1
        df = pd.read_csv(paired_csv(lux, a))
        df["correct"] = df["top1"] == df["label"]
        by = {Path(ck).name: g.sort_values("path")["correct"].to_numpy() for ck, g in df.groupby("checkpoint")}
        first = names[0]
        rows = [{"first": first, "second": n, **paired_stats(by[first], by[n])} for n in names[1:]]
        doc["groups"].append({"lux": lux, "command": as_typed(paired_command(names, lux, _relative(a))), "pairs": rows})
    a.results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.results / "paired.json", doc)
    print(paired_table(a))
    return 0


def paired_csv(lux: str, a) -> Path:
    return a.runs / f"paired-{lux.replace(' ', '-')}lux.csv"


def paired_command(names: list[str], lux: str, a) -> list[str]:
    return dpcal("eval", *[str(a.runs / n) for n in names], "--data", str(a.data / "val"), "--lux", *lux.split(),
                 "--seed", "0", "--workers", str(a.workers), "--predictions", str(paired_csv(lux, a)), "--overwrite",
                 "--json")


def paired_table(a) -> str:
    p = a.results / "paired.json"
    if not p.is_file():
        return ""
    lines = ["| lux | joint | compared with | joint − other (points) | ± 1 s.e. | only joint right | "
             "only other right | McNemar p |", "|---|---|---|---|---|---|---|---|"]
    for g in json.loads(p.read_text())["groups"]:
        for r in g["pairs"]:
            lines.append(f"| {g['lux'].replace(' ', '-')} | {r['first']} | {r['second']} | {100 * r['diff']:+.2f} | "
                         f"{100 * r['diff_se']:.2f} | {r['only_first']} | {r['only_second']} | {r['p_mcnemar']:.2g} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette160")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "table1")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "table1")
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--val-max", type=int, default=1000, help="Validation images during training.")
    ap.add_argument("--sweep-images", type=int, default=1000, help="Val images of the lux sweeps.")
    ap.add_argument("--only", nargs="*", help="Run only these names (and what initialises them).")
    ap.add_argument("--plan", action="store_true", help="Print the commands and exit.")
    ap.add_argument("--table", action="store_true", help="Print the table of the records, write the plot, exit.")
    ap.add_argument("--report", type=Path, help="Evaluate all present runs together into this folder, exit.")
    ap.add_argument("--paired", action="store_true", help="Paired comparisons with the joint model (McNemar), exit.")
    a = ap.parse_args()
    if a.table:
        print(table(a) + "\n\n" + runs_table(a) + "\n\n" + paired_table(a))
        plot_sweep(a, ROOT / "docs" / "images" / "table1-lux-sweep.png")
        return 0
    if a.report:
        return report(a)
    if a.paired:
        return paired(a)
    a.runs.mkdir(parents=True, exist_ok=True)
    return study(a)


if __name__ == "__main__":
    sys.exit(main())
