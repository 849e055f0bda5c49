"""``dpcal render-chart``: a synthetic RAW capture of a chart, to plan or test a calibration."""

from __future__ import annotations

from pathlib import Path

import click

from dpcal.cli.options import emit_json, json_option, overwrite_option


@click.command("render-chart")
@click.option("--chart", "chart_path", required=True, type=click.Path(), help="chart.json.")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(),
              help="Output .dng (a folder for all frames of a display chart).")
@click.option("--size", nargs=2, type=click.IntRange(min=32), default=(4000, 3000), show_default=True,
              help="Sensor width and height.")
@click.option("--profile", "profile_id", default="nexus6p-rear", show_default=True, help="Camera profile.")
@click.option("--psf", "psf_path", type=click.Path(dir_okay=False), help="PSF field .npz (default: the profile's).")
@click.option("--gaussian", type=float, help="Instead of a field: one Gaussian PSF of this sigma (px).")
@click.option("--iso", type=float, default=100, show_default=True)
@click.option("--exposure", type=float, default=0.8, show_default=True, help="Normalised level of the chart's white.")
@click.option("--fill", type=float, default=0.85, show_default=True, help="Fraction of the frame the chart spans.")
@click.option("--rotate", type=float, default=0.0, show_default=True, help="Rotation about the optical axis (deg).")
@click.option("--tilt", nargs=2, type=float, default=(0.0, 0.0), show_default=True, help="Tilts about x and y (deg).")
@click.option("--k1", type=float, default=0.0, show_default=True, help="Radial distortion k1.")
@click.option("--k2", type=float, default=0.0, show_default=True, help="Radial distortion k2.")
@click.option("--vignetting", type=float, default=1.0, show_default=True, help="cos^4 fall-off strength (0: none).")
@click.option("--frame", type=int, help="Frame index of a display chart (default: all frames).")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_option
@json_option
def render_chart(chart_path, out_path, size, profile_id, psf_path, gaussian, iso, exposure, fill, rotate, tilt, k1,
                 k2, vignetting, frame, seed, overwrite, as_json):
    """Render what a camera would record of a chart: pose, lens distortion, PSF, vignetting,
    CFA and noise at an ISO (from the profile), written as DNG."""
    import numpy as np

    from dpcal.chart import chart_raster, load_chart
    from dpcal.chart.geometry import pose_mapping
    from dpcal.chart.render import render_capture, write_capture
    from dpcal.io.atomic import check_writable
    from dpcal.profile import load_profile
    from dpcal.physics.optics import PSFField, gaussian_kernel

    spec = load_chart(chart_path)
    prof = load_profile(profile_id)
    w, h = size
    field = None
    if gaussian is not None and psf_path:
        raise click.UsageError("give --psf or --gaussian, not both")
    if gaussian is not None:
        k = 2 * int(np.ceil(3.5 * gaussian)) + 1
        field = PSFField(np.broadcast_to(gaussian_kernel(k, gaussian), (1, 1, 4, k, k)).copy(),
                         np.array([[[(w - 1) / 2, (h - 1) / 2]]]), sensor_size=(w, h))
    elif psf_path or prof.psf_path():
        field = PSFField.load(psf_path or prof.psf_path())
    mapping = pose_mapping(spec.size_px, (w, h), fill=fill, rotate_deg=rotate, tilt_deg=tuple(tilt), k1=k1, k2=k2)
    frames = [frame] if frame is not None else (list(range(len(spec.frames))) if spec.medium == "display" else [0])
    for f in frames:
        if not 0 <= f < len(spec.frames):
            raise click.UsageError(f"--frame must be in 0..{len(spec.frames) - 1}")
    out = Path(out_path)
    if len(frames) > 1:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{Path(spec.frames[f]['file']).stem}.dng" for f in frames]
    else:
        paths = [out]
    for p in paths:
        check_writable(p, overwrite)
    written = []
    for f, p in zip(frames, paths):
        cap = render_capture(chart_raster(spec, f), mapping, field=field, profile=prof, iso=iso, exposure=exposure,
                             vignetting=vignetting, rng=np.random.default_rng([seed, f]),
                             black_reflectance=0.04 if spec.medium == "print" else 0.002)
        write_capture(p, cap, model=f"render-chart {prof.id}")
        written.append(str(p))
    doc = {"chart": str(spec.path), "profile": prof.id, "size": [w, h], "iso": iso, "files": written,
           "psf": psf_path or (str(prof.psf_path()) if prof.psf_path() else None) if gaussian is None else
           {"gaussian_sigma": gaussian}, "mapping": mapping.to_dict()}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"rendered {len(written)} capture(s) of {spec.path}: {', '.join(written)}")
