"""``dpcal demo``: the pipeline on built-in data."""

from __future__ import annotations

import click

from dpcal.cli.options import emit_json, json_option, overwrite_option, show_progress


@click.command()
@click.option("--out", "out_dir", default="dpcal-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder.")
@click.option("--profile", "profile_id", default="nexus6p-rear", show_default=True, help="Camera profile.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Training steps per model [600].")
@overwrite_option
@json_option
def demo(out_dir: str, profile_id: str, seed: int, steps: int | None, overwrite: bool, as_json: bool) -> None:
    """Run the pipeline end to end on data it makes itself (no downloads): calibrate noise and PSF
    into a profile, simulate a labelled data set with it, train the joint model and the
    classifier on RAW briefly, evaluate both, and write report.md."""
    from dpcal.workflows.demo import DEMO_STEPS, run_demo

    s = run_demo(out_dir, profile_id, seed=seed, overwrite=overwrite, steps=steps or DEMO_STEPS,
                 progress=show_progress(as_json))
    if as_json:
        emit_json(s)
        return
    c = s["capture"]
    click.echo(f"profile {s['profile']}: synthetic gray-chart capture {c['path']}")
    click.echo(f"  read back: {c['width']}x{c['height']} {c['pattern']}, black {c['black_level']}, "
               f"white {c['white_level']:g}, ISO {c['iso']:g}")
    click.echo("  the fitted profile's noise at the paper's light levels (plane R):")
    for row in s["noise_by_lux"]:
        click.echo(f"    {row['lux']:>6g} lux  ISO {row['iso']:>9.0f}  alpha {row['alpha']['R']:.4g}  sigma {row['sigma']['R']:.4g}")
    click.echo("  fit-noise on the captures (fitted vs true camera):")
    for r in s.get("fit_noise", []):
        click.echo(f"    ISO {r['iso']:<5g} {r['plane']:<3} alpha {r['alpha']:.4g} ± {r['alpha_std']:.2g} (profile {r['alpha_profile']:.4g})  "
                   f"sigma {r['sigma']:.4g} ± {r['sigma_std']:.2g} (profile {r['sigma_profile']:.4g})")
    if s.get("fit_psf"):
        p = s["fit_psf"]
        click.echo(f"  fit-psf on a rendered chart capture: registration RMS {p['registration_rms_px']:.3f} px, "
                   f"kernel error median {100 * p['kernel_rel_l2_median']:.1f} % (field {p['field']})")
    sim = s["simulate"]
    click.echo(f"  simulated RAW dataset: {sim['ok']} of {sim['images']} synthetic images -> {sim['dst']} "
               f"({sim['pattern']}, {sim['lux'][0]:g}-{sim['lux'][1]:g} lux), preview {sim['preview']}")
    for mode, t in s["train"].items():
        v = (t.get("val") or {}).get("top1")
        click.echo(f"  trained {mode} ({t['model']}): {t['steps']} steps in {t['elapsed_s']:.0f} s"
                   + ("" if v is None else f", validation top-1 {100 * v:.1f} %"))
    for r in s["eval"]["results"]:
        click.echo(f"  eval {r['name']}: " + ", ".join(f"{e['label']} {100 * e['top1']:.1f} %" for e in r["per_lux"]))
    click.echo(f"report: {s['report']}   (took {s['timings_s']['total']:.0f} s)")
    click.echo(f"summary: {s['out']}/summary.json")
