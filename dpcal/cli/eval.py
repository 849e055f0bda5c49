"""``dpcal eval``: accuracy of trained checkpoints on simulated, on-the-fly or captured RAW data."""

from __future__ import annotations

import click

from dpcal.cli.options import OneOrTwoNumbers, emit_json, json_option, overwrite_option


@click.command(name="eval")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--data", required=True, help="Clean image class folders (or CSV) simulated on the fly, a folder written "
                                            "by `dpcal simulate`, or with --raw class folders of RAW captures.")
@click.option("--lux", cls=OneOrTwoNumbers, type=click.UNPROCESSED, metavar="L | LO HI",
              help="Illuminance for on-the-fly simulation, or a range (log-uniform per image) [the checkpoint's].")
@click.option("--lux-sweep", metavar="L1,L2,...", help="One pass per illuminance over the same images.")
@click.option("--seed", type=int, help="Seed of the per-image crops and noise [each checkpoint's training seed].")
@click.option("--sim-mode", type=click.Choice(["reference", "realistic"]), help="Simulation rules [the checkpoint's].")
@click.option("--raw", is_flag=True, help="--data holds real RAW captures in class folders (any LibRaw format).")
@click.option("--profile", help="Camera profile: the captures' noise at their ISO (--raw), or another camera to "
                                "simulate with.")
@click.option("--iso", type=float, help="With --raw: ISO of files whose metadata has none.")
@click.option("--resample", type=click.Choice(["subsample", "bin"]), default="subsample", show_default=True,
              help="With --raw: reduce captures by taking one sample per group (noise as captured) or averaging.")
@click.option("--white-balance/--no-white-balance", default=None,
              help="With --raw: apply the as-shot white balance [on for reference-mode checkpoints].")
@click.option("--panel-lux", type=float, help="The --lux-sweep value the report's image panel shows [the first].")
@click.option("--max-images", type=int, help="Evaluate an evenly spread subset of this many images.")
@click.option("--predictions", type=click.Path(dir_okay=False), help="Write one CSV row per image and pass.")
@click.option("--report", type=click.Path(file_okay=False), help="Write report.md, tables and plots into this folder.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data loader processes (decode + simulate).")
@click.option("--device", help="Where the models run: cpu, cuda, cuda:1 ... [cpu]")
@overwrite_option
@json_option
def eval_(checkpoints, data, lux, lux_sweep, seed, sim_mode, raw, profile, iso, resample, white_balance, panel_lux,
          max_images, predictions, report, batch_size, workers, device, overwrite, as_json):
    """Evaluate CHECKPOINTS (checkpoint files or `dpcal train` run folders) on labelled data.

    \b
    Examples:
      dpcal eval runs/joint runs/raw --data imagenette/val --lux-sweep 2,3,6,20,200 --report reports/lux
      dpcal eval runs/joint --data sim-val-3lux --predictions preds.csv --json
      dpcal eval runs/joint-2-200 --data captures/ --raw --profile pixel
    """
    import os
    import shlex
    import sys

    from dpcal.errors import BadInputError
    from dpcal.evaluate import evaluate
    from dpcal.evaluate.io import write_predictions
    from dpcal.io.atomic import check_writable
    from dpcal.sim.config import parse_lux

    if raw and (lux is not None or lux_sweep):
        raise BadInputError("--raw captures carry their own light level; drop --lux/--lux-sweep")
    if lux is not None and lux_sweep:
        raise BadInputError("give --lux or --lux-sweep, not both")
    sweep = None
    if lux_sweep:
        try:
            sweep = [float(v) for v in lux_sweep.split(",") if v.strip()]
        except ValueError:
            raise BadInputError(f"--lux-sweep takes comma-separated numbers, got {lux_sweep!r}") from None
        for v in sweep:
            parse_lux(v)
    if predictions:
        check_writable(predictions, overwrite)
    if report and not overwrite and os.path.isdir(report):
        from dpcal.evaluate.report import REPORT_FILES

        if any(os.path.exists(os.path.join(report, f)) for f in REPORT_FILES):
            raise BadInputError(f"{report} already holds a report; pass --overwrite to replace it")
    lux_v = None if lux is None else parse_lux(lux)
    res = evaluate(checkpoints, data, lux=lux_v, lux_sweep=sweep, seed=seed, sim_mode=sim_mode, raw=raw,
                   profile=profile, iso=iso, white_balance=white_balance, resample=resample, batch_size=batch_size,
                   workers=workers, max_images=max_images, panel_images=4 if report else 0, panel_lux=panel_lux,
                   device=device,
                   progress=not as_json or os.isatty(2))
    if predictions:
        write_predictions(res.predictions, predictions)
    written = {}
    if report:
        from dpcal.evaluate.report import write_report

        written = write_report(res, report, overwrite=overwrite, command=shlex.join(["dpcal", *sys.argv[1:]]))
    if as_json:
        emit_json(res.to_json())
        return
    from dpcal.evaluate.report import markdown_table, results_table

    click.echo(markdown_table(results_table(res.results)))
    for r in res.results:
        if r.get("top1") is not None:
            click.echo(f"{r['name']}: top-1 {100 * r['top1']:.2f} %, top-5 {100 * r['top5']:.2f} % on {r['n']} images"
                       + (f" ({len(r['per_lux'])} passes)" if len(r["per_lux"]) > 1 else ""))
        elif r.get("psnr") is not None:
            click.echo(f"{r['name']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f} on {r['n']} images")
    if predictions:
        click.echo(f"  predictions: {predictions}")
    if report:
        click.echo(f"  report: {written['report.md']}")
