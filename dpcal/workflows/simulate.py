"""Write a simulated low-light RAW dataset from an ImageNet-style folder tree or a CSV.

Layout of the output folder ``DST``::

    DST/<label>/<name>.png      one 16-bit single-channel mosaic per image (or .dng)
    DST/manifest.csv            one row per source image (written at the end)
    DST/dataset.json            the card: settings, profile, counts, ``complete``
    DST/.dpcal-sim/journal.jsonl   progress record while running (removed when complete)

A PNG holds ``round(value * 65535)`` of the clipped [0, 1] mosaic, so ``png / 65535`` gives
the normalised mosaic back (CFA pattern in ``dataset.json``). A DNG holds digital numbers
``round(black + value * (white - black))`` with the pattern and levels in its tags.

Resumable and deterministic: every image's randomness derives from ``(seed, key)`` (key = the
source path relative to ``SRC``), each output is written to a temporary name and renamed, and
the journal records finished images; an interrupted run, repeated with the same command,
redoes only what is not recorded and gives byte-identical files whatever the number of
workers. ``dataset.json`` says ``"complete": true`` only after every image is recorded and the
manifest is written.

The dataset format that readers share (discovery, per-image seeds, file names, the card) is
:mod:`dpcal.sim.layout`; the per-image work runs in :mod:`dpcal.workflows.simulate_worker`, the
preview is drawn by :mod:`dpcal.workflows.simulate_preview`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

from dpcal._version import __version__
from dpcal.errors import BadInputError, DpcalError
from dpcal.io.atomic import check_writable, write_bytes_atomic, write_json_atomic
from dpcal.physics.optics import PSFField
from dpcal.profile import load_profile
from dpcal.sim.config import SimConfig
from dpcal.sim.geometry import CROPS
from dpcal.sim.layout import (
    CARD,
    FORMATS,
    JOURNAL,
    MANIFEST,
    MANIFEST_COLUMNS,
    SCHEMA_VERSION,
    STATE_DIR,
    Item,
    discover,
    read_card,
)
from dpcal.workflows.simulate_preview import preview_dataset
from dpcal.workflows.simulate_worker import init_worker, process_chunk

log = logging.getLogger("dpcal")

__all__ = ["simulate_dataset"]

EXECUTORS = ("local", "dask")


def _read_journal(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that image is simply redone
            if isinstance(rec, dict) and "key" in rec and rec.get("status") in ("ok", "skipped"):
                done[rec["key"]] = rec
    return done


def _write_json(path: Path, doc: dict) -> None:
    write_json_atomic(path, doc)


def _fmt(v) -> str:
    return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


def _manifest_bytes(items: Sequence[Item], records: dict[str, dict]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for it in items:
        r = records[it.key]
        ok = r["status"] == "ok"
        a = r.get("alpha") or [None] * 4
        s = r.get("sigma") or [None] * 4
        row = [
            it.out if ok else "",
            it.label,
            it.class_index,
            _fmt(r.get("lux")),
            _fmt(r.get("iso")),
            _fmt(sum(a) / 4) if ok else "",
            _fmt(sum(s) / 4) if ok else "",
            *[_fmt(v) for v in a],
            *[_fmt(v) for v in s],
            it.seed,
            it.key,
            r["status"],
            r.get("detail", ""),
        ]
        w.writerow(row)
    return buf.getvalue().encode()


def _clean_partials(dst: Path, folders: Iterable[str]) -> None:
    """Remove temporary files a killed run left behind (``.<stem>.*.part.<ext>``)."""
    for folder in folders:
        d = dst / folder
        if d.is_dir():
            for f in d.iterdir():
                if f.name.startswith(".") and ".part" in f.name:
                    f.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# running


def _chunks(items: Sequence, size: int) -> list:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run_local(cfg, chunks, workers, on_result):
    if workers == 0:
        init_worker()
        for ch in chunks:
            on_result(process_chunk(cfg, ch))
        return
    import concurrent.futures as cf

    ctx = _forkserver()
    window = 3 * workers
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(cfg,)) as ex:
        it = iter(chunks)
        pending = set()
        try:
            for ch in it:
                pending.add(ex.submit(process_chunk, None, ch))
                if len(pending) >= window:
                    break
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    on_result(fut.result())
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.add(ex.submit(process_chunk, None, nxt))
        except BaseException:
            for fut in pending:
                fut.cancel()
            ex.shutdown(wait=False, cancel_futures=True)
            raise


def _dask_client(scheduler):
    """(client, owned): connect to ``scheduler`` (an address), or use a given Client."""
    if hasattr(scheduler, "submit"):
        return scheduler, False
    try:
        from distributed import Client
    except ImportError:
        raise BadInputError("`executor=dask` needs dask.distributed: pip install 'dpcal[dask]'") from None
    if not scheduler:
        raise BadInputError("`executor=dask` needs `scheduler` ADDRESS (e.g. tcp://host:8786)")
    try:
        return Client(scheduler, timeout="20s"), True
    except (OSError, TimeoutError) as e:
        raise BadInputError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None


def _forkserver():
    """The multiprocessing context of the workers, its server started (idempotent).

    forkserver: workers fork from a clean server process (safe with torch's thread pools, cheap
    to start); torch and the simulator are imported there once. Starting it early lets that
    import (~1.5 s) overlap with listing the source and preparing the destination.
    """
    import multiprocessing as mp
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dpcal.workflows.simulate_worker", "dpcal.sim.simulator", "dpcal.sim.geometry", "cv2", "PIL.Image"])
    forkserver.ensure_running()
    return ctx


def _run_dask(cfg, chunks, client, on_result):
    from distributed import as_completed


    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    cfg_f = client.scatter(cfg, broadcast=True)
    it = iter(chunks)
    first = [client.submit(process_chunk, cfg_f, ch, pure=False) for ch in itertools.islice(it, 4 * n_workers)]
    ac = as_completed(first)
    for fut in ac:
        on_result(fut.result())
        nxt = next(it, None)
        if nxt is not None:
            ac.add(client.submit(process_chunk, cfg_f, nxt, pure=False))


def simulate_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    profile: str = "nexus6p-rear",
    *,
    lux=3.0,
    mode: str = "realistic",
    linearize: str | None = None,
    pattern: str | None = None,
    quantize: bool | None = None,
    psf: bool = False,
    psf_position: str = "sensor",
    size: int = 128,
    crop: str = "eval",
    seed: int = 0,
    fmt: str = "png",
    min_size: int = 32,
    workers: int | None = None,
    executor: str = "local",
    scheduler=None,
    chunk_size: int | None = None,
    overwrite: bool = False,
    preview: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Simulate a RAW dataset from ``src`` into ``dst`` (resumable; see the module docstring).

    Parameters
    ----------
    src : path
        Class folders ``SRC/<label>/<images>`` or a CSV ``path,label`` (paths relative to it).
    dst : path
        Output folder (created).
    profile : str
        Camera profile id or JSON path.
    lux : float or (lo, hi)
        Illuminance, or a range sampled log-uniformly per image.
    mode, linearize, pattern, quantize, psf, psf_position
        Simulator settings (:class:`dpcal.sim.SimConfig`).
    size : int
        Output side (even).
    crop : {"eval", "train"}
        Centre crop, or the random sized crop + flip of training (:mod:`dpcal.sim.geometry`).
    seed : int
        Run seed; per-image seeds derive from it and the image's key.
    fmt : {"png", "dng"}
    min_size : int
        Skip sources whose short side is smaller.
    workers : int, optional
        Worker processes (default: CPU count; 0 runs in this process).
    executor : {"local", "dask"}
    scheduler : str or distributed.Client
        Dask scheduler address (``executor="dask"``).
    chunk_size : int, optional
        Images per task.
    overwrite : bool
        Replace a finished dataset (or a different unfinished one) in ``dst``.
    preview : path, optional
        Also write a preview grid PNG (:func:`dpcal.workflows.simulate_preview.render_preview`).
    progress : bool
        tqdm progress bar on stderr.

    Returns
    -------
    dict
        The dataset card (``complete: true``) plus ``run`` timing.

    Raises
    ------
    BadInputError
        Bad settings, unreadable source, unwritable or conflicting destination.
    """
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if executor not in EXECUTORS:
        raise BadInputError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if crop not in CROPS:
        raise BadInputError(f"unknown crop {crop!r}; use one of {', '.join(CROPS)}")
    if not (isinstance(size, int) and size >= 8 and size % 2 == 0):
        raise BadInputError(f"`size` must be an even number of pixels >= 8 (whole 2x2 CFA tiles), got {size}", param="size")
    if min_size < 1:
        raise BadInputError(f"`min_size` must be >= 1, got {min_size}", param="min_size")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 0:
        raise BadInputError(f"`workers` must be >= 0, got {workers}", param="workers")
    prof = load_profile(profile)
    sim_cfg = SimConfig(mode=mode, lux=lux, linearize=linearize, pattern=pattern, quantize=quantize, psf=psf,
                        psf_position=psf_position).resolve(prof)
    if executor == "local" and workers > 0:
        _forkserver()
    source = discover(src, seed=seed, fmt=fmt)
    dst = Path(dst)
    preview_path = Path(preview) if preview else None
    if preview_path is not None:
        if preview_path.suffix.lower() != ".png":
            raise BadInputError(f"`preview` must name a .png file, got {preview_path}", param="preview")
        check_writable(preview_path, overwrite=overwrite)

    profile_hash = hashlib.sha256(json.dumps(prof.doc, sort_keys=True).encode()).hexdigest()
    settings = {
        "simulator": sim_cfg.to_dict(),
        "size": size,
        "crop": crop,
        "seed": int(seed),
        "format": fmt,
        "min_size": int(min_size),
        "png_encoding": "uint16 single channel, round(value * 65535) of the clipped [0, 1] mosaic" if fmt == "png"
        else None,
        "dng_levels": ("profile" if sim_cfg.quantize else "0-65535") if fmt == "dng" else None,
    }
    identity = {
        "settings": settings,
        "profile": {"id": prof.id, "sha256": profile_hash},
        "source": {"kind": source.kind, "path": source.root},
    }
    src_root = Path(source.root)
    if source.kind == "folders" and (dst.resolve() == src_root or src_root in dst.resolve().parents):
        raise BadInputError(f"the output folder {dst} is inside the source {src_root}; choose a folder outside it")
    token = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    client, own_client = _dask_client(scheduler) if executor == "dask" else (None, False)
    try:
        return _simulate(source, dst, prof, sim_cfg, settings, identity, token, overwrite, preview_path, size, crop,
                         min_size, fmt, workers, executor, client, chunk_size, progress, t0)
    finally:
        if own_client:
            client.close()


def _simulate(source, dst, prof, sim_cfg, settings, identity, token, overwrite, preview_path, size, crop, min_size,
              fmt, workers, executor, client, chunk_size, progress, t0) -> dict:
    done = _prepare_dst(dst, token, identity, overwrite)
    journal_path = dst / STATE_DIR / JOURNAL
    card = {
        "schema_version": SCHEMA_VERSION,
        "kind": "dpcal-simulated-raw-dataset",
        "complete": False,
        "dpcal_version": __version__,
        "token": token,
        **identity,
        "profile": {**identity["profile"], "path": str(prof.path) if prof.path else None, "pattern": sim_cfg.pattern,
                    "black_level": prof.black_level, "white_level": prof.white_level(), "bit_depth": prof.bit_depth},
        "classes": source.classes,
        "num_classes": 1000 if source.class_index_source == "imagenet_lsvrc_2015_synsets" else len(source.classes),
        "class_index_source": source.class_index_source,
        "empty_classes": source.empty_classes,
        "counts": {"images": len(source.items), "ok": None, "skipped": None, "ignored_files": source.ignored_files},
        "manifest": MANIFEST,
    }
    _write_json(dst / CARD, card)
    folders = sorted({Path(it.out).parent.as_posix() for it in source.items})
    for folder in folders:
        (dst / folder).mkdir(parents=True, exist_ok=True)
    _clean_partials(dst, folders)

    # What is left: items without a record, or whose recorded output has gone missing.
    out_of = {it.key: it.out for it in source.items}
    done = {k: r for k, r in done.items() if k in out_of and (r["status"] == "skipped" or (dst / out_of[k]).is_file())}
    todo = [it for it in source.items if it.key not in done]
    if source.empty_classes:
        log.warning("empty class folder(s): %s", ", ".join(source.empty_classes))
    if done:
        log.info("resuming: %d of %d images already done", len(done), len(source.items))

    task_cfg = {
        "token": token,
        "profile": prof,
        "sim": sim_cfg,
        "psf_field": None,
        "size": size,
        "crop": crop,
        "mode": sim_cfg.mode,
        "min_size": min_size,
        "format": fmt,
        "dng_levels": settings["dng_levels"],
    }
    if sim_cfg.psf:

        task_cfg["psf_field"] = PSFField.load(prof.psf_path())
    n_par = workers if executor == "local" else 4
    cs = chunk_size or max(1, min(32, math.ceil(len(todo) / max(1, 4 * max(n_par, 1)))))
    chunks = _chunks([(it.key, it.source, str(dst / it.out), it.seed) for it in todo], cs)

    from tqdm import tqdm

    bar = tqdm(total=len(source.items), initial=len(done), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=not progress, desc="simulate")
    t_work = time.perf_counter()
    journal = open(journal_path, "a", encoding="utf-8")

    first = []

    def on_result(recs: list[dict]) -> None:
        if not first:
            first.append(time.perf_counter())
        for r in recs:
            if r["status"] == "ok":
                r["out"] = out_of[r["key"]]
        journal.write("".join(json.dumps(r) + "\n" for r in recs))
        journal.flush()
        for r in recs:
            done[r["key"]] = r
        bar.update(len(recs))

    try:
        if chunks:
            if executor == "local":
                _run_local(task_cfg, chunks, workers, on_result)
            else:
                _run_dask(task_cfg, chunks, client, on_result)
    except OSError as e:
        raise DpcalError(f"writing to {dst} failed ({e}); fix the cause and rerun the same command to resume") from None
    except Exception as e:
        from concurrent.futures.process import BrokenProcessPool

        if isinstance(e, BrokenProcessPool):
            raise DpcalError("a worker process died (out of memory?); rerun the same command to resume, "
                             "perhaps with fewer `workers`") from None
        raise
    finally:
        journal.close()
        bar.close()
    t_done = time.perf_counter()

    missing = [it.key for it in source.items if it.key not in done]
    if missing:  # pragma: no cover - every chunk returns one record per item
        raise DpcalError(f"{len(missing)} images were not processed (first: {missing[0]}); rerun to resume")
    write_bytes_atomic(dst / MANIFEST, _manifest_bytes(source.items, done))
    n_ok = sum(1 for it in source.items if done[it.key]["status"] == "ok")
    card["counts"].update({"ok": n_ok, "skipped": len(source.items) - n_ok})
    card["complete"] = True
    _write_json(dst / CARD, card)
    shutil.rmtree(dst / STATE_DIR, ignore_errors=True)
    if n_ok == 0:
        log.warning("no image could be used; see the 'detail' column of %s", dst / MANIFEST)

    result = dict(card)
    result["run"] = {
        "processed_now": len(todo),
        "workers": workers if executor == "local" else None,
        "executor": executor,
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "work_s": round(t_done - t_work, 3),
        "first_result_s": round(first[0] - t_work, 3) if first else None,
        "images_per_s": round(len(todo) / (t_done - t_work), 1) if todo and t_done > t_work else None,
        "dst": str(dst),
    }
    if preview_path is not None:

        preview_dataset(dst, preview_path, source=source, task_cfg=task_cfg)
        result["preview"] = str(preview_path)
    return result


def _prepare_dst(dst: Path, token: str, identity: dict, overwrite: bool) -> dict[str, dict]:
    """Check and create ``dst``; return the journal records of an unfinished identical run."""
    if dst.exists() and not dst.is_dir():
        raise BadInputError(f"{dst} exists and is not a folder")
    if dst.is_dir():
        card = None
        try:
            card = read_card(dst)
        except BadInputError:
            if not overwrite:
                raise
        if card is None:
            others = [f for f in dst.iterdir() if f.name != STATE_DIR]
            if others and not overwrite:
                raise BadInputError(f"{dst} is not empty and holds no dpcal dataset; choose a new folder or pass `overwrite=True`")
        elif card.get("complete") and not overwrite:
            raise BadInputError(f"{dst} already holds a complete dataset; pass `overwrite=True` to rebuild it")
        elif card.get("token") != token and not overwrite:
            diff = [k for k in identity if k not in card or _ident_part(card, k, identity[k]) != identity[k]]
            raise BadInputError(
                f"{dst} holds an unfinished dataset made with different {' and '.join(diff) or 'settings'}; "
                "rerun the original command to finish it, or pass `overwrite=True` to start again"
            )
    try:
        dst.mkdir(parents=True, exist_ok=True)
        (dst / STATE_DIR).mkdir(exist_ok=True)
        probe = dst / STATE_DIR / ".probe"  # the real test (os.access says yes to root on read-only mounts)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BadInputError(f"cannot write to the output folder {dst}: {e.strerror or e}") from None
    if overwrite:
        _remove_previous(dst)
        return {}
    return _read_journal(dst / STATE_DIR / JOURNAL)


def _ident_part(card: dict, key: str, ref):
    v = card.get(key)
    return {k: v.get(k) for k in ref} if isinstance(ref, dict) and isinstance(v, dict) else v


def _remove_previous(dst: Path) -> None:
    """Delete the files a previous dpcal run wrote (listed in its manifest or journal)."""
    outs = {r["out"] for r in _read_journal(dst / STATE_DIR / JOURNAL).values() if r.get("out")}
    man = dst / MANIFEST
    if man.is_file():
        with open(man, newline="", encoding="utf-8") as f:
            outs.update(row["path"] for row in csv.DictReader(f) if row.get("path"))
    root = dst.resolve()
    for f in outs:
        p = (dst / f).resolve()
        if root in p.parents:
            p.unlink(missing_ok=True)
    for name in (MANIFEST, CARD):
        (dst / name).unlink(missing_ok=True)
    (dst / STATE_DIR / JOURNAL).unlink(missing_ok=True)
