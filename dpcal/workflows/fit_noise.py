"""From input files to per-ISO fits, an ISO model, a profile, a CSV and plots.

This is what ``dpcal fit-noise`` runs; every step is a library call:

1. :func:`collect_inputs`: files from the command line and an optional CSV manifest
   (``file,iso[,kind[,exposure[,group]]]``), with ISO and exposure from metadata where not given.
2. Per ISO, :func:`fit_single_iso` (one or more captures pooled) or :func:`fit_pairs_iso`
   (frame stacks per exposure plus darks), or :func:`fit_emva_file` for an EMVA 1288 set.
3. :func:`table_rows` and :func:`iso_model_report`: the report's rows, the ISO model and the leave-one-ISO-out check
   (:func:`dpcal.profile.model.fit_iso_model`, :func:`dpcal.profile.model.leave_one_iso_out`).
4. :func:`write_profile`, :func:`write_csv`, and :mod:`dpcal.noise.plots`.

The module is about 700 lines because it is the whole command for three input routes (single
captures, frame stacks, EMVA 1288 sets) that share the input records, the ISO grouping and the
outputs; the fitting itself is in :mod:`dpcal.noise`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from dpcal.cfa import PLANES, split_planes
from dpcal.errors import BadInputError, FitError
from dpcal.io.atomic import OutputSet, sha256_file, write_bytes_atomic
from dpcal.io.raw import RAWPY_SUFFIXES, read_exif, read_raw
from dpcal.noise.fit import NoiseFit, fit_levelsets
from dpcal.noise.hygiene import black_from_darks, defect_map, detect_white_level, prepare_capture
from dpcal.noise.diagnostics import check_fits, inflate_for_green_mismatch, scene_summary
from dpcal.noise.levelsets import LevelSets
from dpcal.noise.pairs import LINEAR_LIMIT, fit_emva, temporal_levelsets, temporal_stats
from dpcal.noise.pairstats import stack_pair_table
from dpcal.noise.single import CaptureSets
from dpcal.physics.clipped import noise_std
from dpcal.profile import Profile, load_profile, new_profile
from dpcal.profile.model import fit_iso_model, leave_one_iso_out

log = logging.getLogger("dpcal")

DARK_KINDS = {"dark", "d", "black"}
BRIGHT_KINDS = {"", "capture", "chart", "scene", "flat", "bright", "b", "light"}


@dataclasses.dataclass
class InputFile:
    """One input file and what is known about it before reading its pixels."""

    path: Path
    iso: float | None = None
    kind: str = "capture"  # "capture" or "dark"
    exposure: float | None = None  # seconds
    order: int = 0
    group: str | None = None  # stack label (pairs): frames of one ISO and group form a stack


def read_manifest(path: str | os.PathLike) -> list[InputFile]:
    """Read a CSV manifest ``file,iso[,kind[,exposure[,group]]]`` (header optional, paths relative to it).

    ``kind`` is ``capture`` (default; also ``chart``, ``scene``, ``flat``, ``bright``) or
    ``dark``; ``exposure`` is in seconds; ``group`` names a stack for ``--method pairs``
    (frames of one ISO and group are frames of one exposure; without it, frames of equal
    exposure time are, which cannot tell two apertures at one shutter speed apart).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.csv")
    >>> _ = open(p, "w").write("file,iso,kind\\na.dng,100,\\nb.dng,100,dark\\n")
    >>> [(f.path.name, f.iso, f.kind) for f in read_manifest(p)]
    [('a.dng', 100.0, 'capture'), ('b.dng', 100.0, 'dark')]
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: no such manifest file")
    out: list[InputFile] = []
    with open(p, newline="") as f:
        for no, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            if no == 1 and row[0].lower() in ("file", "path", "filename"):
                continue
            iso = None
            if len(row) > 1 and row[1]:
                try:
                    iso = float(row[1])
                except ValueError:
                    raise BadInputError(f"{p}:{no}: ISO {row[1]!r} is not a number") from None
                if not iso > 0:
                    raise BadInputError(f"{p}:{no}: ISO must be positive, got {row[1]}")
            kind = row[2].lower() if len(row) > 2 else ""
            if kind in DARK_KINDS:
                kind = "dark"
            elif kind in BRIGHT_KINDS:
                kind = "capture"
            else:
                raise BadInputError(f"{p}:{no}: unknown kind {row[2]!r}; use capture (chart, scene, flat) or dark")
            exposure = None
            if len(row) > 3 and row[3]:
                try:
                    exposure = float(row[3])
                except ValueError:
                    raise BadInputError(f"{p}:{no}: exposure {row[3]!r} is not a number (seconds)") from None
            group = row[4] if len(row) > 4 and row[4] else None
            fp = Path(row[0])
            if not fp.is_absolute():
                fp = p.parent / fp
            out.append(InputFile(fp, iso, kind, exposure, len(out), group))
    if not out:
        raise BadInputError(f"{p}: the manifest lists no files")
    return out


def collect_inputs(
    inputs: list[str],
    *,
    manifest: str | None = None,
    darks: list[str] = (),
    iso: float | None = None,
) -> list[InputFile]:
    """All input files with ISO, kind and exposure (``iso`` overrides, then the manifest, then EXIF)."""
    files: list[InputFile] = [InputFile(Path(p), kind="capture") for p in inputs]
    files += [InputFile(Path(p), kind="dark") for p in darks]
    if manifest:
        files += read_manifest(manifest)
    if not files:
        raise BadInputError("no input files; give RAW files, `manifest` CSV or `emva` FILE")
    seen = set()
    for i, f in enumerate(files):
        f.order = i
        if not f.path.exists():
            raise BadInputError(f"{f.path}: no such file")
        if f.path.is_dir():
            raise BadInputError(f"{f.path} is a folder; give RAW files")
        key = (f.path.resolve(), f.kind)
        if key in seen:
            raise BadInputError(f"{f.path} is given twice")
        seen.add(key)
        if iso is not None:
            f.iso = float(iso)
        if f.iso is None or f.exposure is None:
            meta = read_exif(f.path)
            f.iso = f.iso if f.iso is not None else meta.get("iso")
            f.exposure = f.exposure if f.exposure is not None else meta.get("exposure_time")
    return files


def group_by_iso(files: list[InputFile]) -> dict[float | None, list[InputFile]]:
    """Captures (and darks) by ISO; darks of unknown ISO join every group."""
    groups: dict[float | None, list[InputFile]] = {}
    for f in files:
        if f.kind == "capture":
            groups.setdefault(f.iso, []).append(f)
    if not groups:
        raise BadInputError("only dark frames were given; add captures (charts, scenes or flat fields)")
    for f in files:
        if f.kind == "dark":
            if f.iso is None:
                for g in groups.values():
                    g.append(f)
            elif f.iso in groups:
                groups[f.iso].append(f)
            else:
                log.warning("dark frame %s (ISO %g) matches no capture ISO; ignored", f.path, f.iso)
    if None in groups and len(groups) > 1:
        unknown = [str(f.path) for f in groups[None] if f.kind == "capture"]
        raise BadInputError(
            f"{unknown[0]}: ISO unknown (no metadata) while other inputs have one; "
            "pass `iso` or a `manifest` CSV with the ISO of every file"
        )
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def _read(f: InputFile, raw_kw: dict):
    return read_raw(f.path, iso=f.iso, **raw_kw)


def _dark_calibration(darks: list, pattern: str) -> tuple[tuple[float, ...] | None, np.ndarray | None]:
    """Black level per plane and the hot-pixel map from dark frames (None without darks)."""
    if not darks:
        return None, None
    valid = defect_map([d.dn for d in darks], pattern=pattern)
    return black_from_darks([d.dn for d in darks], pattern, valid), valid


def _common_white(raws: list) -> tuple[float, bool]:
    """The ISO's white level: the lowest detected pile-up over its captures, else metadata."""
    found = []
    for r in raws:
        w, det = detect_white_level(r.dn, r.white_level, min(r.black_level))
        if det:
            found.append(w)
    if found:
        return float(min(found)), True
    return float(min(r.white_level for r in raws)), False


def _check_same_sensor(raws: list, what: str) -> None:
    shapes = {(r.height, r.width) for r in raws}
    if len(shapes) > 1:
        a, b = raws[0], next(r for r in raws if (r.height, r.width) != (raws[0].height, raws[0].width))
        raise BadInputError(
            f"{what}: frames differ in size: {a.path} is {a.width}x{a.height}, {b.path} is {b.width}x{b.height}; "
            "frames to be compared must come from the same sensor mode"
        )
    pats = {r.pattern for r in raws}
    if len(pats) > 1:
        raise BadInputError(f"{what}: frames have different CFA patterns {sorted(pats)}")


# ----------------------------------------------------------------------------------------------
# single-image route


def fit_single_iso(
    iso: float | None,
    files: list[InputFile],
    *,
    raw_kw: dict | None = None,
    scene: str = "auto",
    progress=None,
    prnu: str = "auto",
) -> tuple[dict, list[dict], dict]:
    """Fit one ISO from its captures (pooled level sets per plane; ``prnu``: the ``c y^2``
    term of :mod:`dpcal.noise.prnu`).

    Returns ``(fits_by_plane, capture_infos, sensor)``; ``sensor`` holds the pattern, black
    and white levels used.
    """
    raw_kw = raw_kw or {}
    caps = [f for f in files if f.kind == "capture"]
    dark_files = [f for f in files if f.kind == "dark"]
    what = f"ISO {iso:g}" if iso is not None else "capture"
    darks = [_read(f, raw_kw) for f in dark_files]
    raws = []
    for f in caps:
        raws.append(_read(f, raw_kw))
        if progress is not None:
            progress.update(1)
    if darks:
        _check_same_sensor(raws + darks, what)
    black, valid = _dark_calibration(darks, raws[0].pattern)
    white, detected = _common_white(raws)
    cs = CaptureSets()
    infos = []
    for r in raws:
        bl = black if black is not None else r.black_level
        prep = prepare_capture(r.dn, r.pattern, bl, white, valid=valid if valid is not None and valid.shape == r.dn.shape else None,
                               detect_white=False, path=r.path)
        info = cs.add(prep.planes, prep.lo, prep.hi, scene=scene, valid=prep.valid)
        info.update(prep.info())
        info["white_level_detected"] = detected
        info.update({"iso": iso, "pattern": r.pattern, "width": r.width, "height": r.height})
        infos.append(info)
    fits = cs.fit(what=what, prnu=prnu)
    sources = [str(r.path) for r in raws]
    for fit in fits.values():
        fit.iso = iso
        fit.method = "single"
        fit.extra["sources"] = sources
    black_from = "darks" if black is not None else "metadata"
    if black is None and raw_kw.get("black_level") is not None:
        black_from = "given"
    elif black is None and not _has_black_metadata(caps[0].path):
        black_from = "assumed 0"
    sensor = {
        "pattern": raws[0].pattern,
        "black_level": list(black if black is not None else raws[0].black_level),
        "white_level": white,
        "bit_depth": raws[0].bit_depth,
        "maker": raws[0].maker,
        "model": raws[0].model,
        "black_from": black_from,
    }
    return fits, infos, sensor


def _has_black_metadata(path: Path) -> bool:
    """Whether the file format records a black level (camera RAWs do; headerless, decoded and
    FITS mosaics do not)."""
    return path.suffix.lower() in RAWPY_SUFFIXES


# ----------------------------------------------------------------------------------------------
# pairs route


def _stacks(caps: list[InputFile], what: str) -> list[list[InputFile]]:
    """Frames of one ISO grouped by manifest group, else by exposure; else consecutive pairs."""
    by_group: dict[str, list[InputFile]] = {}
    by_exp: dict[float, list[InputFile]] = {}
    no_exp: list[InputFile] = []
    for f in caps:
        if f.group is not None:
            by_group.setdefault(f.group, []).append(f)
        else:
            (no_exp if f.exposure is None else by_exp.setdefault(round(f.exposure, 12), [])).append(f)
    stacks = [v for _, v in sorted(by_exp.items())] + list(by_group.values())
    no_exp.sort(key=lambda f: f.order)
    if len(no_exp) % 2:
        raise BadInputError(
            f"{what}: {len(no_exp)} frame(s) without an exposure time; they are paired in the order given, "
            "so give an even number (or exposure times in a `manifest`)"
        )
    stacks += [no_exp[i : i + 2] for i in range(0, len(no_exp), 2)]
    single = [s for s in stacks if len(s) < 2]
    if single:
        raise BadInputError(
            f"{what}: {single[0][0].path} has no partner frame at the same ISO and exposure; the pairs method "
            "needs two or more frames of the same scene per exposure (frames at different ISOs cannot be paired)"
        )
    return stacks


def fit_pairs_iso(
    iso: float | None,
    files: list[InputFile],
    *,
    raw_kw: dict | None = None,
    progress=None,
    compare_single: bool = True,
) -> tuple[dict, list[dict], dict]:
    """Photon-transfer fit of one ISO from frame stacks (and darks), per plane.

    Temporal level sets of every stack (fixed-pattern noise cancels in the frame differences)
    and of the dark stacks go into the clipped maximum-likelihood fit. Darks also give the
    black level (unless they are clipped at black) and the hot-pixel map. A saturation below
    the white level (a photon-transfer curve that peaks and falls, full well) limits the
    levels used to 70 % of it (EMVA 1288 linear range).

    Returns ``(fits_by_plane, stack_infos, sensor)``.
    """
    raw_kw = raw_kw or {}
    what = f"ISO {iso:g}" if iso is not None else "pairs"
    caps = [f for f in files if f.kind == "capture"]
    dark_files = [f for f in files if f.kind == "dark"]
    if len(caps) < 2:
        raise BadInputError(
            f"{what}: only one frame ({caps[0].path}); the pairs method needs two or more frames of the same "
            "scene per exposure and ISO (frames at different ISOs cannot be paired)"
        )
    stacks = _stacks(caps, what)
    dark_stacks = _stacks(dark_files, f"{what} darks") if dark_files else []
    raws = {}
    for f in caps + dark_files:
        raws[f.path] = _read(f, raw_kw)
        if progress is not None:
            progress.update(1)
    allr = list(raws.values())
    _check_same_sensor(allr, what)
    pattern = allr[0].pattern
    dark_dn = [raws[f.path].dn for s in dark_stacks for f in s]
    flat_dn = [raws[f.path].dn for s in stacks for f in s]
    valid = defect_map(dark_dn, None, pattern=pattern) if dark_dn else None
    meta_black = np.asarray(allr[0].black_level, dtype=np.float64)
    darks_clipped = bool(dark_dn) and _clipped_at_floor(dark_dn)
    if dark_dn and not darks_clipped:
        black = np.asarray(black_from_darks(dark_dn, pattern, valid))
        black_from = "darks"
    else:
        black = meta_black
        black_from = "metadata (dark frames clipped at black)" if darks_clipped else "metadata"
    found = [detect_white_level(dn, allr[0].white_level, float(black.min())) for dn in flat_dn]
    det = [w for w, d in found if d]
    white = float(min(det)) if det else float(allr[0].white_level)
    scale = white - black
    vplanes = split_planes(valid, pattern) if valid is not None else None
    # DN 0 is the floor unless the camera clips at black (nothing below it in any frame).
    floor_dn = min(float(min(np.min(d) for d in flat_dn + dark_dn)), float(black.min()))
    lo4 = np.array([0.0 if floor_dn >= black[i] else min(0.0, -black[i] / scale[i]) for i in range(4)])

    def planes_of(dns):
        P = split_planes(np.stack(dns).astype(np.float32), pattern)  # (L, 4, h, w)
        return (P - black[None, :, None, None].astype(np.float32)) / scale[None, :, None, None].astype(np.float32)

    sets = {name: [] for name in PLANES}
    dark_read = {name: [] for name in PLANES}
    infos = []
    for k, s in enumerate(stacks + dark_stacks):
        P = planes_of([raws[f.path].dn for f in s])
        for i, name in enumerate(PLANES):
            v = None if vplanes is None else vplanes[i]
            sets[name].append(temporal_levelsets(P[:, i], lo4[i], 1.0, valid=v, source=k))
            if k >= len(stacks):
                dark_read[name].append(temporal_stats(P[:, i], v)[1])
        infos.append({"files": [str(f.path) for f in s], "exposure": s[0].exposure, "iso": iso, "frames": len(s),
                      "group": s[0].group, "kind": "capture" if k < len(stacks) else "dark",
                      "mean_level": float(P.mean()),
                      "pair_stats": stack_pair_table([raws[f.path].dn for f in s], [f.path.name for f in s],
                                                     pattern, black)})
    fits = {}
    for name in PLANES:
        ls = LevelSets.concat(sets[name])
        label = f"{what} plane {name}"
        sat = _saturation_level(ls.level, ls.std**2)
        if sat < 1.0:
            ls = ls.select(ls.level <= LINEAR_LIMIT * sat)
        fit = fit_levelsets(ls, what=label)
        fit.plane, fit.iso, fit.method = name, iso, "pairs"
        fit.gof["saturation_level"] = sat
        fit.extra["sources"] = [str(f.path) for f in caps + dark_files]
        fit.extra["black_from"] = black_from
        if dark_read[name]:
            fit.extra["dark_temporal_std"] = float(np.sqrt(max(np.mean(dark_read[name]), 0.0)))
        fits[name] = fit
    if compare_single:
        _compare_single(fits, stacks[-1], raws, black, white, pattern, valid)
    sensor = {
        "pattern": pattern, "black_level": [float(b) for b in black], "white_level": white,
        "bit_depth": allr[0].bit_depth, "maker": allr[0].maker, "model": allr[0].model, "black_from": black_from,
    }
    return fits, infos, sensor


def _clipped_at_floor(dns: list[np.ndarray]) -> bool:
    """True when dark frames pile up at their minimum value (the camera clips at black)."""
    x = np.concatenate([np.asarray(d).ravel()[::7] for d in dns])
    vmin = x.min()
    return float(np.mean(x == vmin)) > 0.05


def _saturation_level(level: np.ndarray, var: np.ndarray) -> float:
    """Where the photon-transfer curve peaks (full well below the white level), else white (1).

    Level sets are sorted by level and their variance smoothed (running median of 7); a peak
    followed by a drop of more than 10 % marks saturation, unless clipping at white explains
    it (the peak lies within 4 noise std of white).
    """
    if len(level) < 8:
        return 1.0
    o = np.argsort(level)
    lv, v = level[o], var[o]
    k = 7
    sm = np.array([np.median(v[max(0, i - k // 2) : i + k // 2 + 1]) for i in range(len(v))])
    i = int(np.argmax(sm))
    if i < len(sm) - 1 and sm[i + 1 :].min() < 0.9 * sm[i] and lv[i] < 1.0 - 4.0 * math.sqrt(max(sm[i], 0.0)):
        return float(lv[i])
    return 1.0


def _compare_single(fits, stack, raws, black, white, pattern, valid) -> None:
    """Single-image estimate on one frame of a stack: fixed-pattern share ``alpha_single/alpha - 1``."""
    r = raws[stack[0].path]
    try:
        prep = prepare_capture(r.dn, pattern, black, white, valid=valid, detect_white=False, path=r.path)
        cs = CaptureSets()
        cs.add(prep.planes, prep.lo, prep.hi, valid=prep.valid)
        single = cs.fit()
    except FitError as e:
        for f in fits.values():
            f.extra["alpha_single"] = None
            f.extra["fixed_pattern_share"] = None
            f.extra["single_failed"] = str(e)
        return
    for name, f in fits.items():
        f.extra["alpha_single"] = single[name].alpha
        f.extra["fixed_pattern_share"] = single[name].alpha / f.alpha - 1.0


# ----------------------------------------------------------------------------------------------
# EMVA 1288 route


def fit_emva_file(path: str, iso: float | None = None, progress: bool = False) -> tuple[dict, dict]:
    """Photon-transfer fit of an EMVA 1288 data set (monochrome: plane ``Y``).

    Returns ``(fits_by_plane, emva_summary)``.
    """
    r = fit_emva(path, progress=progress)
    steps = r["steps"]
    scale = r["white_level"] - r["dark_offset"]
    lv = np.array([(s["u_y"] - s["u_ydark"]) / scale for s in steps])
    sd = np.sqrt(np.maximum([s["s2_y"] - s["s2_ydark"] + r["sigma_y_dark"] ** 2 for s in steps], 0.0)) / scale
    n = np.array([s["dof"] for s in steps], dtype=np.float64)
    k = len(lv)
    sets = LevelSets(lv, sd, n, 1.0 / n, 1.0 / (2 * n), np.zeros(k), np.ones(k), np.arange(k), kind="emva")
    used = np.zeros(k)
    used[: r["index_sensitivity_max"] + 1] = 1.0
    a, sig = r["alpha"], r["sigma"]
    fit = NoiseFit(
        alpha=a, sigma=sig, alpha_std=r["alpha_std"], sigma_std=r["sigma_std"], b=sig**2,
        b_std=2 * sig * r["sigma_std"], cov=np.diag([r["alpha_std"] ** 2, (2 * sig * r["sigma_std"]) ** 2]),
        gof=r["gof"], sets=sets, weights=used, fitted_std=np.sqrt(a * lv + sig**2), plane="Y", iso=iso,
        method="pairs",
        extra={"K": r["K"], "K_std": r["K_std"], "sigma_y_dark_DN": r["sigma_y_dark"],
               "alpha_single": r["K_single"] / scale, "fixed_pattern_share": r["fixed_pattern_share"],
               "sources": [str(path)]},
    )
    summary = {k_: v for k_, v in r.items() if k_ != "steps"}
    summary["descriptor"] = str(path)
    return {"Y": fit}, summary


# ----------------------------------------------------------------------------------------------
# report, profile, CSV


def table_rows(fits_by_iso: dict) -> list[dict]:
    """Per-ISO profile table rows (planes R, Gr, Gb, B; a monochrome ``Y`` fills all four)."""
    rows = []
    for iso, fits in fits_by_iso.items():
        if iso is None:
            continue
        row = {"iso": float(iso), "alpha": {}, "sigma": {}, "alpha_std": {}, "sigma_std": {}}
        for p in PLANES:
            f = fits.get(p) or fits.get("Y")
            if f is None:
                break
            row["alpha"][p] = float(f.alpha)
            row["sigma"][p] = float(f.sigma)
            row["alpha_std"][p] = float(f.alpha_std)
            row["sigma_std"][p] = float(f.sigma_std) if math.isfinite(f.sigma_std) and f.sigma_std > 0 else float(f.alpha_std)
        else:
            rows.append(row)
    return rows


def iso_model_report(rows: list[dict], kind: str = "cts") -> dict | None:
    """The ISO model fitted to the table rows per plane, and its leave-one-ISO-out errors."""
    if not rows:
        return None
    if kind == "cts" and len({r["iso"] for r in rows}) < 2:
        kind = "linear"
    params = {}
    for p in PLANES:
        params[p] = fit_iso_model(
            kind, [r["iso"] for r in rows], [r["alpha"][p] for r in rows], [r["sigma"][p] for r in rows],
            [r["alpha_std"][p] for r in rows], [r["sigma_std"][p] for r in rows],
        )
    loo = leave_one_iso_out(kind, rows)
    rep = {"kind": kind, "params": params, "leave_one_iso_out": loo}
    if loo:
        rep["loo_alpha_rel_err_rms"] = float(np.sqrt(np.mean([r["alpha_rel_err"] ** 2 for r in loo])))
        rep["loo_sigma_rel_err_rms"] = float(np.sqrt(np.mean([r["sigma_rel_err"] ** 2 for r in loo])))
    return rep


def _slug(s: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in s.strip().lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "camera"


def write_profile(
    path: str | os.PathLike,
    rows: list[dict],
    sensor: dict,
    *,
    method: str,
    inputs: list[str],
    camera_id: str | None = None,
    iso_model: str = "cts",
    white_per_iso: dict | None = None,
    update: bool = False,
    notes: str | None = None,
    input_isos: dict[str, float | None] | None = None,
):
    """Write (or, with ``update``, merge into) a profile with the fitted per-ISO table.

    Provenance: method, inputs with SHA-256 (and ISO, from ``input_isos``), dpcal version and
    date. With ``update`` the existing profile's rows at other ISOs are kept with their inputs,
    and the ISO model is refitted on all rows.
    """
    if not rows:
        raise BadInputError("cannot write a profile: the ISO of the inputs is unknown; pass `iso` or a `manifest`")
    p = Path(path)
    maker = sensor.get("maker") or "unknown"
    model = sensor.get("model") or "unknown"
    cid = camera_id or _slug(f"{maker}-{model}" if sensor.get("maker") or sensor.get("model") else p.stem)
    table = list(rows)
    wpi = {f"{k:g}": float(v) for k, v in (white_per_iso or {}).items() if k is not None}
    if update and p.exists():
        old = load_profile(p)
        fitted = {r["iso"] for r in rows}
        table += [r for r in old.table if r["iso"] not in fitted]
        cid = camera_id or old.id
        maker, model = old.doc["maker"], old.doc["model"]
        wpi = {**(old.doc["sensor"].get("white_level_per_iso") or {}), **wpi}
        notes = (notes + "; " if notes else "") + f"updated {old.path.name}: kept ISOs {sorted(r['iso'] for r in old.table if r['iso'] not in fitted)}"
    isos = input_isos or {}
    new_inputs = [{"path": str(i), "sha256": sha256_file(i), **({"iso": isos[str(i)]} if isos.get(str(i)) else {})}
                  for i in inputs if Path(i).is_file()]
    if update and p.exists():
        # The kept rows' inputs stay on record; an input without an ISO cannot be attributed and
        # is kept unless it is given again now.
        again = {(e["path"], e["sha256"]) for e in new_inputs}
        new_inputs = [e for e in old.doc["provenance"].get("inputs", [])
                      if (e.get("iso") not in fitted if e.get("iso") is not None else (e.get("path"), e.get("sha256")) not in again)
                      ] + new_inputs
    prov = {
        "method": method,
        "source": "dpcal fit-noise",
        "inputs": new_inputs,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if notes:
        prov["notes"] = notes
    prof = new_profile(
        cid, maker, model, pattern=sensor["pattern"], black_level=sensor["black_level"],
        white_level=sensor["white_level"], table=table, iso_model=iso_model, bit_depth=sensor.get("bit_depth"),
        provenance=prov, description=f"Noise calibrated with dpcal fit-noise ({method})",
    )
    if wpi or sensor.get("monochrome"):
        doc = prof.doc
        if wpi:
            doc["sensor"]["white_level_per_iso"] = wpi
        if sensor.get("monochrome"):
            doc["sensor"]["monochrome"] = True
        prof = Profile(doc)
    prof.save(p)
    return prof


CSV_COLUMNS = (
    "iso", "plane", "method", "source", "set", "kind", "level", "std", "n", "c", "d", "clip_lo", "clip_hi",
    "weight", "fitted_std", "fitted_std_unclipped", "alpha", "sigma", "alpha_std", "sigma_std",
)


def write_csv(path: str | os.PathLike, fits_by_iso: dict) -> int:
    """Write every level set with its fit to a CSV (atomically); returns the number of rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    nrows = 0
    for iso, fits in fits_by_iso.items():
        for name, f in fits.items():
            s = f.sets
            srcs = f.extra.get("sources") or []
            unc = noise_std(s.level, f.alpha, f.b, floor=0.0)
            for i in range(len(s)):
                src = srcs[s.source[i]] if s.kind not in ("pairs", "emva") and s.source[i] < len(srcs) else str(s.source[i])
                w.writerow([
                    "" if iso is None else f"{iso:g}", name, f.method, src, i, s.kind,
                    f"{s.level[i]:.8g}", f"{s.std[i]:.8g}", f"{s.n[i]:.0f}", f"{s.c[i]:.6g}", f"{s.d[i]:.6g}",
                    f"{s.lo[i]:.6g}", f"{s.hi[i]:.6g}", f"{f.weights[i]:.4f}", f"{f.fitted_std[i]:.8g}",
                    f"{unc[i]:.8g}", f"{f.alpha:.8g}", f"{f.sigma:.8g}", f"{f.alpha_std:.4g}", f"{f.sigma_std:.4g}",
                ])
                nrows += 1
    write_bytes_atomic(path, buf.getvalue().encode())
    return nrows


# ----------------------------------------------------------------------------------------------
# the whole run


def run_fit_noise(
    inputs: list[str],
    *,
    method: str = "single",
    iso: float | None = None,
    emva: str | None = None,
    manifest: str | None = None,
    darks: list[str] = (),
    output: str | None = None,
    camera_id: str | None = None,
    csv_path: str | None = None,
    plots: str | None = None,
    overwrite: bool = False,
    update: bool = False,
    iso_model: str = "cts",
    scene: str = "auto",
    skip_failed: bool = False,
    raw_kw: dict | None = None,
    progress: bool = True,
    prnu: str = "auto",
    strict: bool = False,
) -> dict:
    """Run ``dpcal fit-noise``: fit every ISO, then the ISO model; write the requested outputs.

    Returns the JSON-able report ``{"method", "fits": [...], "captures": [...],
    "iso_model": {...}, "outputs": {...}, ...}``; the ``fits`` rows are
    :meth:`dpcal.noise.fit.NoiseFit.to_dict` (``iso``, ``plane``, ``alpha``, ``sigma``,
    ``alpha_std``, ``sigma_std``, ``b``, ``b_std``, ``gof``, ...).

    Raises
    ------
    BadInputError, FitError
        Bad inputs, or an undetermined fit (unless ``skip_failed``, which records it).
    """
    if method not in ("single", "pairs"):
        raise BadInputError(f"`method` must be single or pairs, got {method!r}", param="method")
    if iso is not None and not iso > 0:
        raise BadInputError(f"`iso` must be > 0, got {iso:g}", param="iso")
    if update and output and not Path(output).is_file():
        raise BadInputError(f"`update` needs an existing profile to merge into, and {output} does not exist "
                            "(without `update` it is created)", param="update")
    # Check every output before the (long) fit, so that a refusal costs nothing.
    outs = OutputSet()
    if output:
        outs.file(output, overwrite or update)
    if csv_path:
        outs.file(csv_path, overwrite)
    if plots:
        pd = outs.folder(plots)
        if pd.is_dir() and any(pd.glob("noise_*.png")) and not overwrite:
            raise BadInputError(f"{pd} already holds noise plots; pass `overwrite=True` to replace them")
    report: dict = {"method": "pairs" if emva else method}
    fits_by_iso: dict = {}
    failed: list[dict] = []
    captures: list[dict] = []
    sensor = None
    white_per_iso: dict = {}
    all_inputs: list[str] = []
    if emva:
        if inputs or manifest or darks:
            raise BadInputError("`emva` reads its frames from the descriptor; give no other inputs")
        fits, summary = fit_emva_file(emva, iso=iso, progress=progress)
        fits_by_iso[iso] = fits
        report["emva"] = summary
        all_inputs = [emva]
        input_isos = {emva: iso}
        sensor = {"pattern": "RGGB", "black_level": [summary["dark_offset"]] * 4, "white_level": summary["white_level"],
                  "bit_depth": summary["bits"], "maker": None, "model": None, "black_from": "darks",
                  "monochrome": True}
        captures.append({"path": emva, "iso": iso, "kind": "emva1288", "monochrome": True})
    else:
        files = collect_inputs(inputs, manifest=manifest, darks=list(darks), iso=iso)
        all_inputs = [str(f.path) for f in files]
        input_isos = {str(f.path): f.iso for f in files}
        groups = group_by_iso(files)
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="fit-noise", unit="file", disable=None if progress else True, leave=False)
        try:
            for g_iso, g_files in groups.items():
                try:
                    if method == "single":
                        fits, infos, sens = fit_single_iso(g_iso, g_files, raw_kw=raw_kw, scene=scene, progress=bar,
                                                           prnu=prnu)
                    else:
                        fits, infos, sens = fit_pairs_iso(g_iso, g_files, raw_kw=raw_kw, progress=bar)
                except FitError as e:
                    if not skip_failed:
                        raise
                    failed.append({"iso": g_iso, "reason": str(e)})
                    continue
                _diagnose(report, g_iso, fits, infos, sens, prnu if method == "single" else "off", strict)
                fits_by_iso[g_iso] = fits
                captures += infos
                sensor = sensor or sens
                white_per_iso[g_iso] = sens["white_level"]
                log.info("ISO %s: %s", "?" if g_iso is None else f"{g_iso:g}",
                         ", ".join(f"{p} alpha {f.alpha:.4g} sigma {f.sigma:.4g}" for p, f in fits.items()))
        finally:
            bar.close()
    if not fits_by_iso:
        raise FitError("no ISO could be fitted: " + "; ".join(f["reason"] for f in failed))
    report["fits"] = [f.to_dict() for fits in fits_by_iso.values() for f in fits.values()]
    if failed:
        report["failed"] = failed
    report["captures"] = captures
    rows = table_rows(fits_by_iso)
    report["iso_model"] = iso_model_report(rows, iso_model) if rows else None
    outputs: dict = {}
    with outs:  # plots, then the CSV, then the profile: a failure leaves no new file behind
        if plots:
            from dpcal.noise.plots import plot_fits, plot_iso_model

            Path(plots).mkdir(parents=True, exist_ok=True)
            files_out = plot_fits(fits_by_iso, plots)
            if report["iso_model"] and len(rows) >= 2:
                files_out.append(plot_iso_model(rows, report["iso_model"], plots))
            outputs["plots"] = files_out
        if csv_path:
            outputs["csv_rows"] = write_csv(csv_path, fits_by_iso)
            outputs["csv"] = str(csv_path)
        if output:
            prof = write_profile(
                output, rows, sensor, method=report["method"], inputs=all_inputs, camera_id=camera_id,
                iso_model=iso_model, white_per_iso=white_per_iso if len(set(white_per_iso.values())) > 1 else None,
                update=update, notes="monochrome sensor: every plane holds the Y fit" if emva else None,
                input_isos=input_isos,
            )
            outputs["profile"] = str(output)
            outputs["profile_id"] = prof.id
    report["outputs"] = outputs
    return report


def _diagnose(report: dict, iso, fits: dict, infos: list[dict], sensor: dict, prnu: str, strict: bool) -> None:
    """Honesty checks of one ISO (:mod:`dpcal.noise.diagnostics`) into the report and the fits;
    with ``strict`` any finding refuses the ISO (FitError)."""
    scale = float(sensor["white_level"]) - float(np.mean(sensor["black_level"]))
    found = check_fits(fits, scale_dn=scale, prnu=prnu, black_known=sensor.get("black_from") != "assumed 0")
    k = inflate_for_green_mismatch(fits)
    for f in found:
        if f["code"] == "green_mismatch" and k > 1:
            f["message"] += f"; every plane's uncertainty is widened {k:.1f}x"
    for f in found:
        f["iso"] = iso
    for name, fit in fits.items():
        fit.extra["warnings"] = [f["code"] for f in found if f["plane"] in (None, name)]
        fit.extra["black_from"] = fit.extra.get("black_from", sensor.get("black_from"))
    report.setdefault("warnings", []).extend(found)
    report.setdefault("summary", []).append({"iso": iso, "scene": scene_summary(infos, fits)})
    for f in found:
        log.info("%s%s", "" if iso is None else f"ISO {iso:g}: ", f["message"])
    if strict and found:
        what = "" if iso is None else f"ISO {iso:g}: "
        raise FitError(f"{what}refused (--strict): " + found[0]["message"]
                       + (f" (and {len(found) - 1} more finding(s))" if len(found) > 1 else ""))
