"""``dpcal train``: train the Anscombe network with a classifier, or a baseline."""

from __future__ import annotations

import click

from dpcal.cli import set_resume_hint
from dpcal.cli.options import OneOrTwoNumbers, emit_json, json_option, overwrite_option, show_progress


@click.command()
@click.option("--mode", type=click.Choice(["joint", "raw", "clean", "isp", "unet", "reconstruct"]),
              help="joint: Anscombe network + classifier; raw: classifier on the mosaic; clean: classifier on clean "
                   "images; isp: conventional ISP + classifier; unet: Chen U-Net, then classifier; reconstruct: "
                   "Anscombe network alone (L1). [default: joint]")
@click.option("--data", help="Training data: class folders of clean images (simulated on the fly) or a folder written "
                             "by `dpcal simulate`.")
@click.option("--val-data", help="Validation data, same kinds (evaluated every epoch).")
@click.option("--profile", "profile", help="Camera profile id or .json for on-the-fly simulation [nexus6p-rear].")
@click.option("--lux", cls=OneOrTwoNumbers, type=click.UNPROCESSED, metavar="L | LO HI",
              help="Illuminance, or a range sampled log-uniformly per image [3].")
@click.option("--sim-mode", type=click.Choice(["reference", "realistic"]),
              help="Simulation (and crop) rules: the paper's reference code, or realistic [reference].")
@click.option("--size", type=int, help="Image side in pixels [128].")
@click.option("--steps", type=int, help="Optimiser steps in total (a resumed run stops at the same total).")
@click.option("--epochs", type=float, help="Or the length in epochs of the training data.")
@click.option("--batch-size", type=int, help="Global batch size [64; paper recipe 1024].")
@click.option("--lr", type=float, help="Peak learning rate [2e-3; half that with --init].")
@click.option("--init", type=click.Path(), help="Start the classifier from this run or checkpoint (e.g. a clean run).")
@click.option("--seed", type=int, help="Run seed: weights, order, crops and noise derive from it [0].")
@click.option("--workers", type=int, help="Data loader processes (decode + simulate) [1].")
@click.option("--recipe", type=click.Choice(["default", "paper"]), help="Named settings (docs/training.md) [default].")
@click.option("--classifier", type=click.Choice(["mobilenet_v1", "mobilenet_v2"]), help="[mobilenet_v1]")
@click.option("--width", type=float, help="Classifier width multiplier [1.0 for v1, 1.4 for v2].")
@click.option("--iterations", type=int, help="Unrolled iterations of the Anscombe network [1].")
@click.option("--inverse", type=click.Choice(["asymptotic", "closed_form"]), help="Inverse Anscombe transform [asymptotic].")
@click.option("--stage1-fraction", type=float, help="Share of the steps for the ISP alone (joint, unet) [0.2].")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints [100].")
@click.option("--val-every", type=int, help="Steps between validations [one epoch].")
@click.option("--val-max", type=int, help="Validate on at most this many images (evenly spread).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file of settings (options win).")
@click.option("--device", help="cpu, cuda, cuda:1 ... [cuda if available]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--force", is_flag=True, help="With --resume: accept changed model or data settings.")
@overwrite_option
@json_option
def train(mode, data, val_data, profile, lux, sim_mode, size, steps, epochs, batch_size, lr, init, seed, workers, recipe,
          classifier, width, iterations, inverse, stage1_fraction, checkpoint_every, val_every, val_max, config_file,
          device, out, resume, force, overwrite, as_json):
    """Train a model on noisy RAW data simulated with a camera profile.

    \b
    Examples:
      dpcal train --mode clean --data imagenette/train --val-data imagenette/val --epochs 15 --out runs/clean
      dpcal train --mode joint --data imagenette/train --lux 3 --init runs/clean --epochs 15 --out runs/joint
      dpcal train --out runs/joint --resume
    """
    set_resume_hint("rerun with --resume to continue")
    import json
    from pathlib import Path

    from dpcal.learn.config import resolve_config
    from dpcal.learn.trainer import train as run_training
    from dpcal.sim.config import parse_lux

    given = {"mode": mode, "data": data, "val_data": val_data, "profile": profile, "sim_mode": sim_mode, "size": size,
             "steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "init": init, "seed": seed,
             "workers": workers, "recipe": recipe, "classifier": classifier, "width": width, "iterations": iterations,
             "inverse": inverse, "stage1_fraction": stage1_fraction, "checkpoint_every": checkpoint_every,
             "val_every": val_every, "val_max": val_max, "lux": parse_lux(lux) if lux is not None else None}
    if steps is not None:
        given["epochs"] = None
    if epochs is not None:
        given["steps"] = None
    saved = Path(out) / "config.json"
    if resume and not saved.is_file():
        from dpcal.errors import BadInputError

        raise BadInputError(f"{out} has no run to resume (no config.json or checkpoint); drop --resume to start one")
    if resume:
        # The run's own settings, with what the command line gives on top.
        base = json.loads(saved.read_text())["train"]
        if steps is not None or epochs is not None:
            base.pop("steps", None), base.pop("epochs", None)
        base.update({k: v for k, v in given.items() if v is not None})
        given = base
    cfg = resolve_config(given, config_file)
    res = run_training(cfg, out, resume=resume, overwrite=overwrite, force=force,
                       progress=show_progress(as_json), device=device)
    if not res.get("model_file"):
        return  # a non-zero rank under torchrun: rank 0 reports
    if as_json:
        emit_json(res)
        return
    val = res.get("val") or {}
    click.echo(f"{out}: {res['mode']} ({res['model']}), {res['steps']} steps ({res['epochs']:g} epochs) "
               f"in {res['elapsed_s']:.0f} s" + (f", {res['images_per_s']:.0f} images/s" if res.get("images_per_s") else ""))
    if "top1" in val:
        click.echo(f"  validation: top-1 {100 * val['top1']:.2f} %, top-5 {100 * val['top5']:.2f} % on {val['n']} images")
    elif "psnr" in val:
        click.echo(f"  validation: PSNR {val['psnr']:.2f} dB on {val['n']} images")
    click.echo(f"  model: {res['model_file']}   metrics: {out}/metrics.csv   curve: {out}/curve.png")
