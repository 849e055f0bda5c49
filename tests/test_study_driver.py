"""The Table 1 study driver (benchmarks/study_table1.py): what it skips, retrains and tabulates.

The study itself takes hours; these tests check the bookkeeping that lets it span sessions
whose machines do not keep the run folders: records decide what is done, the clean classifier
is retrained when a run it initialises is still to do, and the table is built from records.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_table1", ROOT / "benchmarks" / "study_table1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def args(study, tmp_path, **kw):
    a = dict(data=tmp_path / "data", runs=tmp_path / "runs", results=tmp_path / "results", epochs=6.0, batch=64,
             workers=1, val_max=1000, sweep_images=1000, only=None, plan=True)
    a.update(kw)
    return study.argparse.Namespace(**a)


def record(a, name, top1, top5, sweep=None, epochs=6.0):
    doc = {"name": name, "epochs": epochs, "batch": 64, "eval": {"top1": top1, "top5": top5}}
    if sweep:
        doc["sweep"] = {"per_lux": [{"lux": lx, "top1": t} for lx, t in sweep]}
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / f"{name}.json").write_text(json.dumps(doc))


def planned(study, a, capsys) -> list[str]:
    assert study.study(a) == 0
    return capsys.readouterr().out.splitlines()


def test_plan_starts_with_clean_then_its_dependents(study, tmp_path, capsys):
    a = args(study, tmp_path)
    out = planned(study, a, capsys)
    trains = [line for line in out if " train " in line]
    assert len(trains) == len(study.RUNS)
    assert "--mode clean" in trains[0] and "--init" not in trains[0]
    joint = next(line for line in trains if "joint-3lux-s0" in line)
    assert f"--init {a.runs / 'clean'}" in joint and "--epochs 6" in joint
    asis = next(line for line in trains if "isp-asis-3lux" in line)
    assert "--steps 0" in asis and "--epochs" not in asis  # the ISP + clean classifier as is: no training
    sweeps = [line for line in out if "--lux-sweep" in line]
    assert len(sweeps) == len(study.SWEEP)


def test_records_skip_runs_and_clean_is_retrained_only_while_needed(study, tmp_path, capsys):
    a = args(study, tmp_path)
    record(a, "clean", 0.7, 0.95)
    record(a, "raw-3lux-s0", 0.5, 0.9)
    out = planned(study, a, capsys)
    assert "raw-3lux-s0: recorded, skipped" in out
    # joint and others still need the clean weights, which this machine lacks: clean is retrained
    assert any("--mode clean" in line for line in out)
    for name, *_ in study.RUNS:
        record(a, name, 0.5, 0.9)
    out = planned(study, a, capsys)
    assert all(line.endswith("recorded, skipped") for line in out)


def test_a_record_of_another_budget_does_not_count(study, tmp_path, capsys):
    a = args(study, tmp_path)
    record(a, "raw-3lux-s0", 0.5, 0.9, epochs=12.0)
    assert study.load_record("raw-3lux-s0", a) is None
    assert study.load_record("raw-3lux-s0", args(study, tmp_path, epochs=12.0))["eval"]["top1"] == 0.5


def test_table_holds_the_records_and_the_paper(study, tmp_path):
    a = args(study, tmp_path)
    record(a, "clean", 0.7689, 0.9687)
    record(a, "joint-3lux-s0", 0.6612, 0.9401)
    table = study.table(a)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert "76.89 / 96.87" in rows["MobileNet-v1 on clean images (the ceiling)"]
    joint = rows["joint Anscombe + MobileNet-v1"]
    assert "66.12 / 94.01 · *to do*" in joint and "30.50 / 53.28" in joint and "48.46 / 71.44" in joint
    assert rows["Chen U-Net + fine-tuned classifier"].count("*to do*") == 1


def test_sweep_plot_is_written(study, tmp_path):
    a = args(study, tmp_path)
    record(a, "clean", 0.7, 0.95)
    record(a, "joint-3lux-s0", 0.6, 0.9, sweep=[(2, 0.5), (3, 0.6), (200, 0.7)])
    out = tmp_path / "sweep.png"
    study.plot_sweep(a, out)
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"


def test_script_runs_from_the_command_line(study, tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_table1.py"), "--plan", "--runs",
                        str(tmp_path / "runs"), "--results", str(tmp_path / "results")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" dpcal train ") == len(study.RUNS) and "--mode clean" in r.stdout


def test_paired_stats_against_hand_counts(study):
    # 10 images: both right on 5, only the first on 3, only the second on 1, both wrong on 1.
    a = [1] * 5 + [1, 1, 1] + [0] + [0]
    b = [1] * 5 + [0, 0, 0] + [1] + [0]
    r = study.paired_stats(a, b)
    assert (r["n"], r["only_first"], r["only_second"]) == (10, 3, 1)
    assert r["diff"] == pytest.approx(0.2)
    assert r["diff_se"] == pytest.approx((4 - 4 / 10) ** 0.5 / 10)
    assert r["p_mcnemar"] == pytest.approx(0.625)  # 2 * P(X >= 3), X ~ Bin(4, 1/2) = 2 * 5/16
    assert study.paired_stats([1, 0], [1, 0])["p_mcnemar"] == 1.0
