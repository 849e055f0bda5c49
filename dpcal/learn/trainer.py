"""The trainer behind ``dpcal train``: one loop for every mode, exact resume, data-parallel.

Modes (what is trained, on what, with which loss):

=============  ==========================================  ==================================
mode           model                                       phases
=============  ==========================================  ==================================
``joint``      Anscombe network + classifier               stage 1: the network alone, L1 to
                                                           the clean linear image
                                                           (``stage1_fraction`` of the
                                                           steps); then both, cross-entropy
``raw``        classifier on the 3-channel mosaic          cross-entropy
``clean``      classifier on clean images                  cross-entropy
``isp``        conventional ISP (fixed) + classifier        cross-entropy (classifier only)
``unet``       Chen et al. U-Net + classifier               U-Net alone, L1; then the
                                                           classifier alone, cross-entropy
``reconstruct``  Anscombe network alone                    L1
=============  ==========================================  ==================================

The loop counts optimiser steps (``steps``, or ``epochs`` x steps per epoch; a step is one
global batch). Epoch ``e`` visits the images in a permutation seeded by ``(seed, e)``, each
image with its own crop and noise seed (:func:`dpcal.learn.data.sample_seed`), so a run resumed
from any checkpoint sees exactly the batches the uninterrupted run saw; with the model,
optimiser, scheduler and RNG states restored, the weights come out bitwise identical on a CPU.

Under ``torchrun --nproc-per-node N`` each process takes every N-th sample of each global batch
and gradients are averaged (gloo on CPU, NCCL on GPU); process 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dpcal._version import __version__
from dpcal.errors import BadInputError, DpcalError
from dpcal.learn.metrics import topk_correct
from dpcal.io.atomic import write_json_atomic
from dpcal.learn.checkpoint import FINAL, LAST, load_checkpoint, save_checkpoint
from dpcal.learn.config import TrainConfig
from dpcal.learn.models.registry import describe_spec
from dpcal.learn.data import (
    DataSource,
    ImageDataset,
    MosaicDataset,
    SimulateCollate,
    collate,
    open_source,
    simulate_batch,
)
from dpcal.learn.recipe import (
    build_run_model,
    init_from,
    lr_factor,
    make_optimizer,
    phase_at,
    plan_phases,
    set_trainable,
)
from dpcal.learn.rundir import METRICS_COLUMNS, append_metrics, check_resume, prepare_run, truncate_metrics
from dpcal.profile import Profile

log = logging.getLogger("dpcal")

__all__ = ["TrainingError", "epoch_batches", "evaluate_batches", "train"]


class TrainingError(DpcalError):
    """Training cannot go on (a non-finite loss, for example); the last good checkpoint is kept."""


# -- distributed -------------------------------------------------------------------------------
class _Dist:
    """World size, rank and helpers; a single process when not launched by torchrun."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.active = self.world > 1
        if self.active and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def broadcast_flag(self, flag: bool) -> bool:
        if not self.active:
            return flag
        t = torch.tensor([1 if flag else 0])
        torch.distributed.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# -- data ----------------------------------------------------------------------------------------
class _Data:
    """Datasets and loaders of a run (train, and validation if given)."""

    def __init__(self, cfg: TrainConfig, train_src: DataSource, val_src: DataSource | None, profile_doc: dict,
                 sim_cfg: dict, device: torch.device):
        self.cfg, self.train_src, self.val_src, self.device = cfg, train_src, val_src, device
        self.clean = cfg.mode == "clean"
        tone = "none" if self.clean else sim_cfg["linearize"]
        # On a GPU the simulation runs in the training step; on a CPU in the loader workers.
        self.sim_in_loader = device.type == "cpu"
        if not self.clean:  # once for the run (the loader workers' simulators stay quiet)
            prof, (lo, hi) = Profile.from_dict(profile_doc), sim_cfg["lux"]
            prof.warn_if_extrapolated(prof.iso_for_lux(hi), prof.iso_for_lux(lo))
        self.collate = collate if (self.clean or not self.sim_in_loader) else SimulateCollate(profile_doc, sim_cfg)
        self.sim = None
        if not self.clean and not self.sim_in_loader:
            self.sim = SimulateCollate(profile_doc, sim_cfg).simulator().to(device)

        def dataset(src: DataSource, crop: str, epoch):
            if src.kind == "simulated":
                return MosaicDataset(src)
            return ImageDataset(src, cfg.size, crop, cfg.sim_mode, tone, cfg.seed, epoch)

        self.train_ds = dataset(train_src, "train", 0)
        self.val_ds = dataset(val_src, "eval", None) if val_src is not None else None

    def loader(self, ds, batches: list[list[int]]):
        return torch.utils.data.DataLoader(
            ds, batch_sampler=batches, collate_fn=collate if isinstance(ds, MosaicDataset) else self.collate,
            num_workers=self.cfg.workers,
            worker_init_fn=_worker_init if self.cfg.workers else None, multiprocessing_context=_mp_context(self.cfg),
        )

    def to_device(self, batch: dict) -> dict:
        batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if self.sim is not None and "image" in batch and "mosaic" not in batch:
            batch = simulate_batch(self.sim, batch)
        return batch


def _worker_init(_):
    torch.set_num_threads(1)


def _mp_context(cfg: TrainConfig):
    return "forkserver" if cfg.workers and "forkserver" in torch.multiprocessing.get_all_start_methods() else None


def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of an epoch: a permutation seeded by ``(seed, epoch)``, incomplete batch dropped.

    Examples
    --------
    >>> b = epoch_batches(10, 4, 0, 0)
    >>> len(b), sorted(b[0] + b[1]) != list(range(8)), b == epoch_batches(10, 4, 0, 0)
    (2, True, True)
    """
    from dpcal.sim.layout import derive_seed

    g = torch.Generator().manual_seed(derive_seed(seed, f"epoch{epoch}"))
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i * batch:(i + 1) * batch] for i in range(n // batch)]


# -- one step and evaluation ---------------------------------------------------------------------
def _forward(model, batch: dict, input_kind: str, loss_kind: str, cfg: TrainConfig):
    """(loss, logits or reconstruction) of a batch."""
    if loss_kind == "l1":
        rec = model.isp(batch["mosaic"], batch["alpha"], batch["sigma"])
        return F.l1_loss(rec, batch["linear"].to(rec.dtype)), rec
    if input_kind == "rgb":
        x = batch["image"]
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
    else:
        logits = model(batch["mosaic"], batch["alpha"], batch["sigma"])
    return F.cross_entropy(logits.float(), batch["label"], label_smoothing=cfg.label_smoothing), logits


def evaluate_batches(model, loader, to_device, input_kind: str, loss_kind: str, cfg: TrainConfig) -> dict:
    """Mean loss and top-1/top-5 (classification) or PSNR (reconstruction) over a loader."""
    model.eval()
    n = loss_sum = c1 = c5 = psnr_sum = 0.0
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch)
            loss, out = _forward(model, batch, input_kind, loss_kind, cfg)
            b = len(batch["label"])
            n += b
            loss_sum += float(loss) * b
            if loss_kind == "l1":
                mse = ((out.float().clamp(0, 1) - batch["linear"].float()) ** 2).flatten(1).mean(1)
                psnr_sum += float((-10 * torch.log10(mse.clamp(min=1e-12))).sum())
            else:
                a, b5 = topk_correct(out, batch["label"])
                c1, c5 = c1 + a, c5 + b5
    model.train()
    if n == 0:
        return {}
    out = {"loss": loss_sum / n, "n": int(n)}
    if loss_kind == "l1":
        out["psnr"] = psnr_sum / n
    else:
        out.update(top1=c1 / n, top5=c5 / n)
    return out


# -- the loop ------------------------------------------------------------------------------------
def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
          force: bool = False, progress: bool = True, device: str | None = None) -> dict:
    """Train the model of ``cfg`` into the run folder ``out``.

    Parameters
    ----------
    cfg : TrainConfig
        Resolved settings (:func:`dpcal.learn.config.resolve_config`).
    out : path
        Run folder: ``config.json``, ``metrics.csv``/``metrics.json``, ``curve.png``,
        ``checkpoints/last.pt`` and, when complete, ``model.pt``.
    resume : bool
        Continue from ``out/checkpoints/last.pt`` (refused if the model or data settings
        changed, unless ``force``).
    overwrite : bool
        Start over in a folder that holds a run.
    progress : bool
        A progress bar on stderr.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``...; default: CUDA if available (the local rank's GPU
        under torchrun), else CPU.

    Returns
    -------
    dict
        Summary: run folder, steps, phases, final metrics, images/s, elapsed time.

    Raises
    ------
    BadInputError
        Unusable data, classes that differ between train and validation data, a bad ``init``,
        a resume that does not match.
    TrainingError
        A non-finite loss (the last good checkpoint stays).
    """
    dev = _device(device)
    dist = _Dist(dev)
    try:
        return _train(cfg, Path(out), resume, overwrite, force, progress, dev, dist)
    finally:
        dist.close()


def _device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _train(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool, force: bool, progress: bool,
           dev: torch.device, dist: _Dist) -> dict:
    from dpcal.profile import load_profile
    from dpcal.sim.config import SimConfig

    t_start = time.perf_counter()
    ckpt = None
    if dist.main:
        ckpt = prepare_run(out, resume, overwrite)
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    if not dist.main and resume and (out / LAST).is_file():
        ckpt = load_checkpoint(out / LAST)
    if ckpt is not None:
        check_resume(ckpt["train"], cfg, force)

    train_src = open_source(cfg.data)
    val_src = open_source(cfg.val_data) if cfg.val_data else None
    if val_src is not None and val_src.classes != train_src.classes:
        only_t = sorted(set(train_src.classes) - set(val_src.classes))[:3]
        only_v = sorted(set(val_src.classes) - set(train_src.classes))[:3]
        raise BadInputError(f"the training and validation data have different classes (only in training: {only_t}, "
                            f"only in validation: {only_v}); use the same class folders")
    if len(train_src.classes) < 2:
        raise BadInputError(f"{cfg.data} has {len(train_src.classes)} class; training a classifier needs at least 2")
    if val_src is not None and cfg.val_max:
        val_src = val_src.subset(cfg.val_max)
    needs_clean = cfg.mode in ("clean", "reconstruct", "unet")
    if train_src.kind == "simulated" and needs_clean:
        raise BadInputError(f"`mode={cfg.mode}` needs clean images (targets), but {cfg.data} holds simulated mosaics; "
                            "pass the clean image folders with `profile` and `lux` instead")
    if val_src is not None and val_src.kind == "simulated" and needs_clean:
        raise BadInputError(f"`mode={cfg.mode}` needs clean validation images; pass the clean image folders")

    if train_src.kind == "simulated":
        card = train_src.card
        prof = load_profile(card["profile"]["id"])
        sim_cfg = dict(card["settings"]["simulator"])
        if cfg.size != card["settings"]["size"]:
            raise BadInputError(f"{cfg.data} holds {card['settings']['size']} px mosaics; pass `size={card['settings']['size']}`")
    else:
        prof = load_profile(cfg.profile)
        sim_cfg = SimConfig(mode=cfg.sim_mode, lux=cfg.lux).resolve(prof).to_dict()
    pattern = sim_cfg["pattern"]
    if val_src is not None and val_src.kind == "simulated" and val_src.pattern != pattern:
        raise BadInputError(f"the validation mosaics are {val_src.pattern}, the training data {pattern}")

    model, spec = build_run_model(cfg, len(train_src.classes), pattern)
    input_kind = getattr(model, "input_kind", "raw")
    if cfg.init and ckpt is None:
        what = init_from(model, cfg, train_src.classes)
        log.info("initialised the %s from %s", what, cfg.init)
    elif cfg.mode == "isp" and not cfg.init:
        log.warning("`mode=isp` without `init` trains the classifier from scratch on the ISP's output")
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    n = len(train_src)
    spe = n // cfg.batch_size
    if spe == 0:
        raise BadInputError(f"{cfg.data} has {n} images, fewer than one batch of {cfg.batch_size}; lower `batch_size`")
    if cfg.batch_size % dist.world:
        raise BadInputError(f"`batch_size` {cfg.batch_size} must be a multiple of the {dist.world} processes")
    total = cfg.steps if cfg.steps is not None else max(1, int(round(cfg.epochs * spe)))
    phases = plan_phases(cfg, total, has_targets=train_src.kind == "images")
    if cfg.mode == "joint" and train_src.kind == "simulated" and cfg.stage1_fraction > 0:
        log.warning("simulated training data has no clean targets: stage 1 (the Anscombe network alone) is skipped")

    data = _Data(cfg, train_src, val_src, prof.doc, sim_cfg, dev)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total, spe))
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if dist.active else model

    step, elapsed0 = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        step, elapsed0 = int(ckpt["step"]), float(ckpt.get("elapsed_s", 0.0))
        if dist.main:
            truncate_metrics(out / "metrics.csv", step)
        log.info("resuming %s at step %d of %d", out, step, total)

    base = {
        "model": spec, "input": input_kind, "classes": train_src.classes,
        "sim": {"profile": prof.doc, "config": sim_cfg, "size": cfg.size},
        "train": cfg.to_dict(), "total_steps": total, "phases": phases, "dpcal_version": __version__,
        "data": {"kind": train_src.kind, "root": train_src.root, "n": n,
                 "val": None if val_src is None else {"kind": val_src.kind, "root": val_src.root, "n": len(val_src)}},
    }
    if dist.main:
        write_json_atomic(out / "config.json", {k: v for k, v in base.items() if k != "sim"} | {
            "sim": {"profile": prof.id, "config": sim_cfg, "size": cfg.size}})
        (out / "checkpoints").mkdir(exist_ok=True)

    def checkpoint(at: int, elapsed: float) -> None:
        # Never replace a good checkpoint with diverged weights (the loss can still look finite).
        if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()):
            raise TrainingError(f"the weights became non-finite by step {at}; stopped. The last good checkpoint "
                                f"({out / LAST}) is kept; lower `lr` (now {cfg.lr:g}) and rerun with `resume=True` and `force=True`")
        if dist.main:
            save_checkpoint(out / LAST, {**base, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                                         "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "step": at,
                                         "elapsed_s": elapsed})
        dist.barrier()

    val_every = cfg.val_every or spe
    pbar = None
    if progress and dist.main:
        from tqdm import tqdm

        import sys

        # In a log file, a line a minute instead of a redrawn bar.
        pbar = tqdm(total=total, initial=step, unit="step", desc=f"train {cfg.mode}", dynamic_ncols=True, leave=False,
                    mininterval=0.5 if sys.stderr.isatty() else 60)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    window = {"loss": 0.0, "n": 0, "c1": 0, "c5": 0, "images": 0, "t": time.perf_counter()}
    last_val: dict = {}
    t_loop = time.perf_counter()
    steps_done = 0

    def run_val(at: int, phase: dict) -> dict:
        if val_src is None:
            return {}
        res = {}
        if dist.main:
            batches = [list(range(i, min(i + cfg.batch_size, len(val_src)))) for i in range(0, len(val_src), cfg.batch_size)]
            res = evaluate_batches(model, data.loader(data.val_ds, batches), data.to_device, input_kind, phase["loss"], cfg)
            append_metrics(out / "metrics.csv", [{"step": at, "epoch": round(at / spe, 3), "phase": phase["name"],
                                                   "split": "val", **_fmt(res), "elapsed_s": round(elapsed0 + time.perf_counter() - t_loop, 1)}])
        dist.barrier()
        return res

    try:
        while step < total:
            epoch, pos = divmod(step, spe)
            batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch)[pos:]
            if dist.active:
                batches = [b[dist.rank::dist.world] for b in batches]
            if isinstance(data.train_ds, ImageDataset):
                data.train_ds.epoch = epoch
            for batch in data.loader(data.train_ds, batches):
                phase = phase_at(phases, step)
                set_trainable(model, phase["train"])
                batch = data.to_device(batch)
                with autocast:
                    loss, outp = _forward(ddp, batch, input_kind, phase["loss"], cfg)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"the loss became {loss_value} at step {step + 1}; stopped. The last good checkpoint "
                        f"({out / LAST}) is kept; lower `lr` (now {cfg.lr:g}) and rerun with `resume=True` and `force=True`")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                steps_done += 1
                b = len(batch["label"])
                window["loss"] += loss_value * b
                window["n"] += b
                if phase["loss"] == "ce":
                    a, a5 = topk_correct(outp.detach(), batch["label"])
                    window["c1"] += a
                    window["c5"] += a5
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{loss_value:.3f}", phase=phase["name"], refresh=False)
                end_of_log = step % cfg.log_every == 0 or step == total
                if end_of_log:
                    tot = dist.all_sum([window["loss"], window["n"], window["c1"], window["c5"]])
                    dt = time.perf_counter() - window["t"]
                    if dist.main and tot[1]:
                        row = {"step": step, "epoch": round(step / spe, 3), "phase": phase["name"], "split": "train",
                               "loss": round(tot[0] / tot[1], 5), "lr": f"{sched.get_last_lr()[0]:.4g}",
                               "images_per_s": round(tot[1] / max(dt, 1e-9), 1),
                               "elapsed_s": round(elapsed0 + time.perf_counter() - t_loop, 1)}
                        if phase["loss"] == "ce":
                            row.update(top1=round(tot[2] / tot[1], 4), top5=round(tot[3] / tot[1], 4))
                        append_metrics(out / "metrics.csv", [row])
                    window = {"loss": 0.0, "n": 0, "c1": 0, "c5": 0, "t": time.perf_counter()}
                if step % val_every == 0 or step == total:
                    last_val = run_val(step, phase) or last_val
                if step % cfg.checkpoint_every == 0 or step == total:
                    checkpoint(step, elapsed0 + time.perf_counter() - t_loop)
                if step >= total:
                    break
    except KeyboardInterrupt:
        if pbar is not None:
            pbar.close()
        raise
    if pbar is not None:
        pbar.close()
    elapsed = elapsed0 + time.perf_counter() - t_loop
    if total == 0:  # an ISP in front of an --init classifier, as is
        checkpoint(0, 0.0)
    summary = {
        "run": str(out), "mode": cfg.mode, "model": describe_spec(spec),
        "steps": total, "epochs": round(total / spe, 3), "phases": phases, "classes": len(train_src.classes),
        "train_images": n, "val": last_val or None, "elapsed_s": round(elapsed, 1),
        "images_per_s": round(steps_done * cfg.batch_size / max(time.perf_counter() - t_loop, 1e-9), 1) if steps_done else None,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if dist.main:
        save_checkpoint(out / FINAL, {**base, "state_dict": model.state_dict(), "step": total, "elapsed_s": elapsed})
        write_json_atomic(out / "metrics.json", summary)
        _plot_curve(out)
        summary["model_file"] = str(out / FINAL)
    return summary


def _fmt(res: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.items() if k in METRICS_COLUMNS}



def _plot_curve(out: Path) -> None:
    from dpcal.learn.plots import learning_curve

    try:
        learning_curve(out / "metrics.csv", out / "curve.png")
    except (OSError, ValueError) as e:
        log.warning("could not draw the learning curve: %s", e)
