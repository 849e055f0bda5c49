"""Evaluate trained checkpoints on labelled data: the library behind ``dpcal eval``.

Data (``data``):

- clean image folders (class folders or a ``path,label`` CSV), simulated on the fly with each
  checkpoint's camera profile and simulation settings, at the illuminance(s) asked for;
- a folder written by ``dpcal simulate`` (PNG or DNG mosaics with per-image noise);
- with ``raw=True``, class folders of real RAW captures (:mod:`dpcal.evaluate.captures`).

Every image is evaluated with its own seed ``derive_seed(seed, key)`` (``key``: its path
relative to the data root), the rule ``dpcal simulate`` uses, so evaluating a clean folder on
the fly and evaluating the folder ``dpcal simulate`` wrote with the same settings and seed see
the same crops and the same noise; and the same call gives the same numbers. Each value of
``lux_sweep`` is a separate pass over the same images with the same seeds.

Checkpoints that need the same data (the same profile, simulation settings, size and seed) share
one pass of decoding and simulation: each batch is handed to every one of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpcal.errors import BadInputError
from dpcal.learn.metrics import (
    confusion_matrix,
    per_class_accuracy,
    psnr_per_image,
    ssim_per_image,
    topk_hits,
    topk_predictions,
)

log = logging.getLogger("dpcal")

PREDICTION_COLUMNS = ["checkpoint", "path", "label", "top1", "top2", "top3", "top4", "top5", "lux"]

__all__ = ["Evaluation", "LoadedModel", "PREDICTION_COLUMNS", "evaluate", "load_for_eval"]


@dataclasses.dataclass
class LoadedModel:
    """A checkpoint ready to evaluate."""

    checkpoint: str          # as given
    name: str                # short label for tables (the run folder's name)
    model: torch.nn.Module
    meta: dict
    input_kind: str          # "raw" or "rgb"
    classifies: bool         # False for reconstruction models (no classifier)
    params: int
    macs: int

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def pattern(self) -> str | None:
        return getattr(self.model, "pattern", None)

    @property
    def size(self) -> int:
        return int(self.meta["sim"]["size"])

    @property
    def description(self) -> str:
        from dpcal.learn.models import describe_spec

        return describe_spec(self.meta["model"])

    @property
    def mode(self) -> str | None:
        return (self.meta.get("train") or {}).get("mode")


def load_for_eval(checkpoint: str | os.PathLike) -> LoadedModel:
    """Load a checkpoint file or run folder, with its size figures.

    Parameters and MACs are counted with :func:`dpcal.learn.models.count_params` /
    :func:`~dpcal.learn.models.count_macs` (one image at the checkpoint's size).
    """
    from dpcal.learn.checkpoint import load_model
    from dpcal.learn.models import count_macs, count_params, example_inputs

    model, meta = load_model(checkpoint)
    if not meta.get("sim") or not meta.get("classes"):
        raise BadInputError(f"{checkpoint}: the checkpoint has no simulation settings or class list; "
                            "it was not written by `dpcal train`")
    p = Path(meta["path"])
    name = p.parent.name if p.name == "model.pt" else (p.parent.parent.name + f"@{meta.get('step', '?')}"
                                                        if p.parent.name == "checkpoints" else p.stem)
    input_kind = getattr(model, "input_kind", "raw")
    classifies = input_kind == "rgb" or getattr(model, "classifier", None) is not None
    size = int(meta["sim"]["size"])
    return LoadedModel(str(checkpoint), name, model, meta, input_kind, classifies, count_params(model),
                       count_macs(model, example_inputs(model, size)))


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    results : list of dict
        One per checkpoint (JSON-able): ``checkpoint``, ``name``, ``model``, ``mode``, ``input``,
        ``n`` (image evaluations, all passes), ``top1``, ``top5`` (fractions; None for
        reconstruction models), ``per_lux`` (one entry per pass: ``lux`` (a number, ``[lo, hi]``
        or None for clean images and captures), ``label``, ``n``, ``top1``, ``top5``, and
        ``psnr``/``ssim`` for reconstruction models), ``psnr``/``ssim``, ``classes``,
        ``per_class`` (``class``, ``n``, ``top1``), ``confusion`` (rows = true class, columns =
        top-1 prediction, over all passes), ``params``, ``macs``, ``images_per_s`` (model time
        only), ``seed``, ``sim`` (profile id, mode, size, pattern).
    predictions : list of dict
        One row per image and pass, keys :data:`PREDICTION_COLUMNS`.
    panel : dict or None
        For the Figure-5 panel: ``clean`` (N, H, W, 3), ``noisy`` (N, H, W, 3) demosaicked
        noisy mosaic, ``stages`` {name: (N, H, W, 3)} what each model hands its classifier,
        ``lux``, ``keys``, ``gamma`` (display gamma to apply: linear data get 1/2.2).
    data : dict
        ``root``, ``kind``, ``n``, ``classes``.
    """

    results: list[dict]
    predictions: list[dict]
    panel: dict | None
    data: dict

    def to_json(self) -> dict:
        """``{"results": [...]}``, each result with the ``data`` description: the document
        ``dpcal eval --json`` prints."""
        return {"results": [{**r, "data": self.data} for r in self.results]}


# -- passes ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Pass:
    """One pass of one checkpoint over the data; passes with equal ``key`` share their batches."""

    model_index: int
    lux: float | tuple[float, float] | None
    label: str
    key: str
    make_loader: object  # callable(indices or None) -> iterable of batch dicts
    keys: list           # image keys in loader order
    done: int = 0        # images seen so far


def _lux_label(lux) -> str:
    if lux is None:
        return "clean"
    if isinstance(lux, (tuple, list)):
        lo, hi = lux
        return f"{lo:g} lux" if lo == hi else f"{lo:g}-{hi:g} lux"
    return f"{lux:g} lux"


def _norm_lux(lux) -> float | tuple[float, float]:
    from dpcal.sim.config import parse_lux

    lo, hi = parse_lux(lux)
    return lo if lo == hi else (lo, hi)


def _sim_config(m: LoadedModel, lux, sim_mode: str | None, profile) -> tuple[dict, dict]:
    """The profile document and resolved simulator settings of a pass (checkpoint's unless overridden)."""
    from dpcal.profile import Profile, load_profile
    from dpcal.sim.config import SimConfig

    prof = load_profile(profile) if profile is not None else Profile.from_dict(m.meta["sim"]["profile"])
    base = dict(m.meta["sim"]["config"])
    lo_hi = (lux, lux) if not isinstance(lux, tuple) else lux
    if sim_mode is not None and sim_mode != base.get("mode"):
        fields = {"mode": sim_mode, "lux": lo_hi, "psf": base.get("psf", False),
                  "psf_position": base.get("psf_position", "sensor"), "noise_source": base.get("noise_source", "model")}
    else:
        fields = {**base, "lux": lo_hi}
    cfg = SimConfig(**fields).resolve(prof).to_dict()
    if cfg["pattern"] != m.pattern:
        raise BadInputError(f"{m.checkpoint}: the model reads {m.pattern} mosaics, but simulating with `sim_mode` "
                            f"{cfg['mode']!r} and profile {prof.id!r} gives {cfg['pattern']}; use the checkpoint's "
                            "settings")
    return prof.doc, cfg


def _describe_data(source) -> dict:
    return {"root": source.root, "kind": source.kind, "n": len(source), "classes": list(source.classes)}


def _check_classes(m: LoadedModel, source) -> np.ndarray:
    """Data label index -> checkpoint class index; refuses data with classes the model does not know."""
    known = {c: i for i, c in enumerate(m.classes)}
    unknown = [c for c in source.classes if c not in known]
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise BadInputError(f"{m.checkpoint} was trained on other classes than the data: {len(unknown)} of the data's "
                            f"{len(source.classes)} classes are not among its {len(m.classes)} ({shown}); evaluate "
                            "it on data with its class folders")
    return np.array([known[c] for c in source.classes], dtype=np.int64)


def _loader(ds, collate_fn, batch_size: int, workers: int, indices=None):
    if indices is not None:
        ds = torch.utils.data.Subset(ds, list(indices))
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=workers,
        multiprocessing_context="forkserver" if workers and "forkserver" in torch.multiprocessing.get_all_start_methods()
        else None)


def _plan(models: list[LoadedModel], source, kind: str, *, lux, lux_sweep, seed, sim_mode, profile, batch_size,
          workers, captures) -> list[_Pass]:
    from dpcal.learn.data import ImageDataset, MosaicDataset, SimulateCollate, collate

    passes = []
    for i, m in enumerate(models):
        s = int(seed if seed is not None else (m.meta.get("train") or {}).get("seed", 0))
        crop_mode = (m.meta.get("train") or {}).get("sim_mode") or m.meta["sim"]["config"].get("mode", "reference")
        if sim_mode is not None:
            crop_mode = sim_mode
        if m.input_kind == "rgb":
            if kind != "images":
                raise BadInputError(
                    f"{m.checkpoint} classifies clean RGB images ({m.mode or 'clean'} run), but the data are RAW "
                    f"({kind}); put an ISP in front of it first: `dpcal train --mode isp --steps 0 --init "
                    f"{m.checkpoint} --data ... --out RUN` builds conventional ISP + this classifier as is; evaluate RUN")
            if lux is not None or lux_sweep:
                log.warning("%s classifies clean images: evaluated on the clean images (lux settings do not apply)",
                            m.name)
            key = json.dumps(["clean", m.size, crop_mode, s])
            ds = ImageDataset(source, m.size, "eval", crop_mode, "none", s, None)
            passes.append(_Pass(i, None, "clean", key,
                                lambda idx, ds=ds: _loader(ds, collate, batch_size, workers, idx), source.keys))
            continue
        if not m.classifies and kind != "images":
            raise BadInputError(f"{m.checkpoint} is a reconstruction model: it needs clean images as targets; "
                                "evaluate it on clean image folders (simulated on the fly)")
        if kind == "simulated":
            card = source.card["settings"]
            if source.pattern != m.pattern or int(card["size"]) != m.size:
                raise BadInputError(f"{source.root} holds {card['size']} px {source.pattern} mosaics; {m.checkpoint} "
                                    f"reads {m.size} px {m.pattern} mosaics; simulate the data with its settings")
            if lux is not None or lux_sweep or sim_mode is not None:
                log.warning("the data are simulated already (%s): lux and sim_mode settings do not apply", source.root)
            ds = MosaicDataset(source)
            sim_lux = _norm_lux(card["simulator"]["lux"])
            passes.append(_Pass(i, sim_lux, _lux_label(sim_lux), json.dumps(["simulated"]),
                                lambda idx, ds=ds: _loader(ds, collate, batch_size, workers, idx), source.keys))
            continue
        if kind == "captures":
            c = captures[i]
            passes.append(_Pass(i, None, "captured", f"captures{id(c)}",
                                lambda idx, c=c: _loader(c, collate, batch_size, 0, idx), c.source.keys))
            continue
        if lux_sweep:
            luxes = [_norm_lux(v) for v in lux_sweep]
        elif lux is not None:
            luxes = [_norm_lux(lux)]
        else:
            luxes = [_norm_lux(m.meta["sim"]["config"]["lux"])]
        for lx in luxes:
            prof_doc, cfg = _sim_config(m, lx, sim_mode, profile)
            ds = ImageDataset(source, m.size, "eval", crop_mode, cfg["linearize"], s, None)
            key = json.dumps(["sim", m.size, crop_mode, s, cfg, prof_doc.get("id"),
                              hash(json.dumps(prof_doc, sort_keys=True))])
            passes.append(_Pass(i, lx, _lux_label(lx), key,
                                lambda idx, ds=ds, p=prof_doc, c=cfg: _loader(ds, SimulateCollate(p, c), batch_size,
                                                                              workers, idx),
                                source.keys))
    return passes


# -- the run -----------------------------------------------------------------------------------------
def evaluate(checkpoints: Sequence[str | os.PathLike], data: str | os.PathLike, *, lux=None,
             lux_sweep: Sequence | None = None, seed: int | None = None, sim_mode: str | None = None,
             raw: bool = False, profile: str | None = None, iso: float | None = None,
             white_balance: bool | None = None, resample: str = "subsample", batch_size: int = 64,
             workers: int = 0, max_images: int | None = None, panel_images: int = 4,
             panel_lux: float | None = None, device: str | None = None, progress: bool = False) -> Evaluation:
    """Evaluate checkpoints on labelled data.

    Parameters
    ----------
    checkpoints : sequence of path
        Checkpoint files or ``dpcal train`` run folders.
    data : path
        Clean image folders / CSV, a ``dpcal simulate`` folder, or (``raw=True``) class folders of
        RAW captures.
    lux : float or (lo, hi), optional
        Illuminance for on-the-fly simulation (a range: log-uniform per image); default: the
        checkpoint's training setting.
    lux_sweep : sequence of float, optional
        One pass per value over the same images (instead of ``lux``).
    seed : int, optional
        Seed of the per-image crops and noise; default: each checkpoint's training seed.
    sim_mode : {"reference", "realistic"}, optional
        Simulation and crop rules; default: the checkpoint's.
    raw : bool
        ``data`` holds real RAW captures (class folders).
    profile : str, optional
        Camera profile: required with ``raw`` (noise at each file's ISO); otherwise replaces the
        checkpoint's profile for on-the-fly simulation.
    iso : float, optional
        With ``raw``: the ISO of files whose metadata has none.
    white_balance : bool, optional
        With ``raw``: apply the file's as-shot white balance (default: for checkpoints trained in
        reference mode, whose mosaics are of white-balanced images).
    resample : {"subsample", "bin"}
        With ``raw``: how captures are reduced to the model's size (see
        :func:`dpcal.evaluate.captures.reduce_mosaic`).
    batch_size, workers : int
        Data loading (``workers`` processes decode and simulate).
    max_images : int, optional
        Evaluate an evenly spread subset of this many images.
    panel_images : int
        Images of the Figure-5 panel (0: none).
    panel_lux : float, optional
        The pass the panel shows (a ``lux_sweep`` value; default: each model's first pass).
    device : str, optional
        Where the models run (``cpu``, ``cuda``, ...; default ``cpu``); decoding and simulation
        stay in the loader on the CPU.
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    Evaluation

    Raises
    ------
    BadInputError
        Missing checkpoints or data, unlabelled or empty data, data whose classes the checkpoint
        does not know, data of another kind or geometry than a checkpoint reads, no usable
        RAW capture.
    """
    if not checkpoints:
        raise BadInputError("give at least one checkpoint or run folder")
    if lux is not None and lux_sweep:
        raise BadInputError("give `lux` or `lux_sweep`, not both")
    if raw and profile is None:
        raise BadInputError("raw captures need `profile` (the camera profile whose noise model matches the captures)")
    if resample not in ("subsample", "bin"):
        raise BadInputError(f"`resample` must be 'subsample' or 'bin', got {resample!r}")
    dev = torch.device(device or "cpu")
    models = [load_for_eval(c) for c in checkpoints]
    _unique_names(models)
    for m in models:
        m.model.to(dev)

    captures = None
    if raw:
        from dpcal.evaluate.captures import CaptureDataset, open_captures

        listing = open_captures(data)
        source = listing.source
        kind = "captures"
        captures = {}
        cache: dict = {}
        for i, m in enumerate(models):
            if m.input_kind == "rgb":
                continue
            wb = white_balance if white_balance is not None else m.meta["sim"]["config"].get("mode") == "reference"
            k = (m.size, m.pattern, bool(wb))
            if k not in cache:
                cache[k] = CaptureDataset(listing, profile, size=m.size, pattern=m.pattern, white_balance=bool(wb),
                                          iso=iso, resample=resample)
            captures[i] = cache[k]
        if captures:
            source = next(iter(captures.values())).source
        if max_images is not None:
            log.warning("max_images does not apply to RAW captures: all usable files are evaluated")
    else:
        from dpcal.learn.data import open_source

        source = open_source(data)
        kind = source.kind
        source = source.subset(max_images)
    if len(source) == 0:
        raise BadInputError(f"{data}: no labelled images to evaluate")
    label_maps = [_check_classes(m, source) for m in models]
    passes = _plan(models, source, kind, lux=lux, lux_sweep=lux_sweep, seed=seed, sim_mode=sim_mode, profile=profile,
                   batch_size=batch_size, workers=workers, captures=captures)

    rows: list[list[dict]] = [[] for _ in models]
    model_time = [0.0] * len(models)
    groups: dict[str, list[_Pass]] = {}
    for p in passes:
        groups.setdefault(p.key, []).append(p)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(g[0].keys) for g in groups.values()), unit="img", desc="eval", dynamic_ncols=True, leave=False)
    with torch.inference_mode():
        for key, group in groups.items():
            for batch in group[0].make_loader(None):
                on = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
                for p in group:
                    m = models[p.model_index]
                    t0 = time.perf_counter()
                    out = m.model(on["image"]) if m.input_kind == "rgb" else m.model(
                        on["mosaic"], on["alpha"], on["sigma"])
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    model_time[p.model_index] += time.perf_counter() - t0
                    out = out.cpu()
                    _collect(rows[p.model_index], m, p, batch, out, label_maps[p.model_index])
                if bar is not None:
                    bar.update(len(batch["label"]))
    if bar is not None:
        bar.close()

    results = [_summarise(m, passes, rows[i], model_time[i], i, seed, sim_mode, profile)
               for i, m in enumerate(models)]
    predictions = [r for rs in rows for r in rs]
    panel = None
    if panel_images:
        from dpcal.evaluate.panel import make_panel

        panel = make_panel(models, passes, source, panel_images, panel_lux, dev)
    return Evaluation(results, predictions, panel, _describe_data(source))


def _unique_names(models: list[LoadedModel]) -> None:
    seen: dict[str, int] = {}
    for m in models:
        n = seen.get(m.name, 0)
        seen[m.name] = n + 1
        if n:
            m.name = f"{m.name}#{n + 1}"


def _collect(rows: list, m: LoadedModel, p: _Pass, batch: dict, out: torch.Tensor, label_map: np.ndarray) -> None:
    b = len(batch["label"])
    idx = range(p.done, p.done + b)
    p.done += b
    labels = torch.from_numpy(label_map[batch["label"].numpy()])
    lux = batch.get("lux")
    lux_v = [None] * b if lux is None else [float(v) for v in lux]
    if not m.classifies:
        psnr = psnr_per_image(out, batch["linear"])
        ssim = ssim_per_image(out, batch["linear"])
        for j, i in enumerate(idx):
            rows.append({"_pass": p, "checkpoint": m.checkpoint, "path": p.keys[i], "label": int(labels[j]),
                         "lux": lux_v[j], "psnr": float(psnr[j]), "ssim": float(ssim[j])})
        return
    top = topk_predictions(out.float(), 5)
    t1, t5 = topk_hits(top, labels)
    for j, i in enumerate(idx):
        r = {"_pass": p, "checkpoint": m.checkpoint, "path": p.keys[i], "label": int(labels[j]), "lux": lux_v[j],
             "hit1": bool(t1[j]), "hit5": bool(t5[j])}
        for k in range(5):
            r[f"top{k + 1}"] = int(top[j, k]) if k < top.shape[1] else None
        rows.append(r)


def _stats(rs: list[dict], classifies: bool) -> dict:
    n = len(rs)
    if not n:
        return {"n": 0}
    if not classifies:
        return {"n": n, "top1": None, "top5": None, "psnr": float(np.mean([r["psnr"] for r in rs])),
                "ssim": float(np.mean([r["ssim"] for r in rs]))}
    return {"n": n, "top1": sum(r["hit1"] for r in rs) / n, "top5": sum(r["hit5"] for r in rs) / n}


def _summarise(m: LoadedModel, passes: list[_Pass], rows: list[dict], seconds: float, index: int, seed,
               sim_mode, profile) -> dict:
    mine = [p for p in passes if p.model_index == index]
    per_lux = []
    for p in mine:
        rs = [r for r in rows if r["_pass"] is p]
        lx = list(p.lux) if isinstance(p.lux, tuple) else p.lux
        per_lux.append({"lux": lx, "label": p.label, **_stats(rs, m.classifies)})
    total = _stats(rows, m.classifies)
    cfg = m.meta["sim"]["config"]
    res = {
        "checkpoint": m.checkpoint, "name": m.name, "model": m.description, "mode": m.mode, "input": m.input_kind,
        **total, "per_lux": per_lux, "classes": m.classes, "params": m.params, "macs": m.macs,
        "images_per_s": round(len(rows) / seconds, 1) if seconds > 0 else None,
        "seed": int(seed if seed is not None else (m.meta.get("train") or {}).get("seed", 0)),
        "sim": {"profile": profile or m.meta["sim"]["profile"].get("id"), "mode": sim_mode or cfg.get("mode"),
                "size": m.size, "pattern": m.pattern},
        "step": m.meta.get("step"),
    }
    if m.classifies:
        cm = confusion_matrix([r["label"] for r in rows], [r["top1"] for r in rows], len(m.classes))
        acc = per_class_accuracy(cm)
        res["per_class"] = [{"class": c, "n": int(cm[k].sum()), "top1": None if math.isnan(acc[k]) else float(acc[k])}
                            for k, c in enumerate(m.classes) if cm[k].sum() > 0]
        res["confusion"] = cm.tolist()
    for r in rows:
        r.pop("_pass", None)
        r.pop("hit1", None)
        r.pop("hit5", None)
    return res
