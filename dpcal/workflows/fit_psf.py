"""The ``dpcal fit-psf`` workflow: files in, a PSF field file, figures and a profile update out.

The estimation itself is :func:`dpcal.psf.fit.fit_psf` (captures and a chart spec in, a
:class:`~dpcal.psf.fit.FitPSFResult` out); this module reads the files, writes the field
atomically, draws the figures and attaches the field to a camera profile.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from dpcal.chart.spec import load_chart
from dpcal.errors import BadProfileError
from dpcal.io.atomic import check_writable
from dpcal.io.raw import read_raw
from dpcal.profile import Profile, load_profile
from dpcal.psf.fit import fit_psf

__all__ = ["attach_to_profile", "run_fit_psf"]


def run_fit_psf(
    captures: Sequence[str | os.PathLike],
    chart: str | os.PathLike,
    out: str | os.PathLike,
    *,
    kernel_size: int = 31,
    grid: tuple[int, int] = (8, 6),
    nodes: str = "coverage",
    profile: str | None = None,
    prior: str = "laplacian",
    distortion: Sequence[str] = ("k1", "k2"),
    smooth: bool = True,
    plots: str | os.PathLike | None = None,
    attach: str | os.PathLike | None = None,
    overwrite: bool = False,
    raw_kw: dict | None = None,
    progress: bool = True,
) -> dict:
    """Fit a PSF field to RAW captures of a PSF chart and write it to ``out`` (``.npz``).

    Parameters
    ----------
    captures : paths of the RAW captures (a display chart: its frames in order)
    chart : path of the chart's ``chart.json``
    out : path of the field file to write
    kernel_size, grid, nodes, profile, prior, distortion, smooth, progress
        As :func:`dpcal.psf.fit.fit_psf`.
    plots : folder, optional
        Write the PSF mosaics and the MTF50 map there.
    attach : path, optional
        A profile ``.json`` whose ``psf`` entry is set to the new field.
    overwrite : bool
        Replace an existing ``out``.
    raw_kw : dict, optional
        Keywords of :func:`dpcal.io.raw.read_raw` (pattern, levels, headerless sizes).

    Returns
    -------
    dict
        The fit's summary, registration, noise and per-tile QA (:meth:`FitPSFResult.to_dict`),
        with ``out`` and, when written, ``plots`` and ``attached``.
    """
    check_writable(out, overwrite)
    spec = load_chart(chart)
    raws = [read_raw(c, **(raw_kw or {})) for c in captures]
    res = fit_psf(raws, spec, kernel_size=kernel_size, grid=tuple(grid), nodes=nodes, profile=profile, prior=prior,
                  distortion=tuple(distortion), smooth=smooth, progress=progress)
    res.field.save(out)
    doc = res.to_dict()
    doc["out"] = os.fspath(out)
    if plots:
        from dpcal.psf.plots import write_plots  # matplotlib, only when asked

        doc["plots"] = write_plots(res.field, plots)
    if attach:
        doc["attached"] = {"profile": os.fspath(attach), **attach_to_profile(attach, out)}
    return doc


def attach_to_profile(profile_path: str | os.PathLike, field_path: str | os.PathLike) -> dict:
    """Point a profile file's ``psf`` entry at a field file (path relative to the profile).

    Parameters
    ----------
    profile_path : path to a profile ``.json`` (rewritten atomically)
    field_path : path to the field ``.npz``

    Returns
    -------
    dict
        The profile's new ``psf`` block.

    Raises
    ------
    BadProfileError
        The profile file is missing or invalid.
    """
    pp = Path(profile_path)
    if pp.suffix != ".json" or not pp.is_file():
        raise BadProfileError(f"{pp}: `attach` needs a profile .json file (copy a bundled one with "
                              "`dpcal profile show ID --json > my.json` first)", param="attach")
    prof = load_profile(pp)
    fp = Path(field_path).resolve()
    try:
        rel = os.path.relpath(fp, pp.resolve().parent)
    except ValueError:  # another drive
        rel = str(fp)
    doc = dict(prof.doc)
    doc["psf"] = {"file": rel}
    Profile(doc, pp).save(pp)
    return doc["psf"]
