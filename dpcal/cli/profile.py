"""``dpcal profile``: list, show, validate profiles and query their noise."""

from __future__ import annotations

import click

from dpcal.cli.options import emit_json, json_option


@click.group()
def profile() -> None:
    """Camera profiles (bundled ones, DPCAL_PROFILE_PATH folders, or .json files)."""


@profile.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the profiles dpcal can find."""
    from dpcal.profile import list_profiles

    rows = list_profiles()
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        isos = ",".join(f"{i:g}" for i in r["isos"])
        click.echo(f"{r['id']:<18} {r['maker']} {r['model']}  [{r['cfa_pattern']}, ISO {isos}, {r['iso_model']} model]")


@profile.command()
@click.argument("profile_id", metavar="ID_OR_FILE")
@json_option
def show(profile_id: str, as_json: bool) -> None:
    """Show a profile document."""
    from dpcal.profile import load_profile

    p = load_profile(profile_id)
    if as_json:
        emit_json(p.doc)
        return
    d = p.doc
    s = d["sensor"]
    click.echo(f"{d['id']}: {d['maker']} {d['model']}  ({p.path})")
    kind = "monochrome (all four planes equal)" if s.get("monochrome") else f"CFA {s['cfa_pattern']}"
    click.echo(f"  sensor: {kind}, black {s['black_level']}, white {s['white_level']:g}")
    click.echo(f"  ISO model: {p.iso_model['kind']}; light: {d['light']['lux_per_light_level']:g} lux per light level, "
               f"ISO {d['light']['iso_at_unit_light_level']:g} at light level 1")
    click.echo("  ISO        plane  alpha        sigma")
    for row in p.table:
        for plane in row["alpha"]:
            click.echo(f"  {row['iso']:<10g} {plane:<6} {row['alpha'][plane]:<12.5g} {row['sigma'][plane]:.5g}")
    prov = d["provenance"]
    click.echo(f"  source: {prov.get('citation') or prov.get('source') or prov['method']}")
    if d.get("psf"):
        click.echo(f"  PSF field: {p.psf_path()}")


@profile.command()
@click.argument("profiles", nargs=-1, required=True, metavar="ID_OR_FILE...")
@json_option
def validate(profiles: tuple[str, ...], as_json: bool) -> None:
    """Check profile files or bundled ids (and their PSF files); exit 1 listing every problem."""
    from dpcal.profile import check_profile_file

    results = [(p, *check_profile_file(p)) for p in profiles]
    if as_json:
        docs = [{"profile": arg, "file": str(path), "valid": not errors, "errors": errors}
                for arg, path, errors in results]
        emit_json(docs[0] if len(docs) == 1 else docs)
    else:
        for arg, path, errors in results:
            if not errors:
                click.echo(f"{path}: valid")
            for e in errors:
                click.echo(f"{path}: {e}", err=True)
    if any(errors for _, _, errors in results):
        raise SystemExit(1)


@profile.command()
@click.argument("profile_id", metavar="ID_OR_FILE")
@click.option("--iso", type=float, help="ISO to evaluate the noise at.")
@click.option("--lux", type=float, help="Illuminance (lux), through the profile's light model.")
@click.option("--source", type=click.Choice(["model", "table"]), default="model", show_default=True,
              help="ISO model, or log-log interpolation of the measured table (model outside it).")
@json_option
def noise(profile_id: str, iso: float | None, lux: float | None, source: str, as_json: bool) -> None:
    """Poisson-Gaussian alpha and sigma per CFA plane at an ISO or a light level."""
    from dpcal.profile import load_profile

    if (iso is None) == (lux is None):
        raise click.UsageError("give exactly one of --iso and --lux")
    p = load_profile(profile_id)
    n = p.noise(iso=iso, lux=lux, source=source)
    doc = {"profile": p.id, "iso": n.iso, "lux": lux, "alpha": n.alpha, "sigma": n.sigma}
    if as_json:
        emit_json(doc)
        return
    where = f"{lux:g} lux (ISO {n.iso:.6g})" if lux is not None else f"ISO {n.iso:g}"
    click.echo(f"{p.id} at {where}:")
    for plane in n.alpha:
        click.echo(f"  {plane:<3} alpha {n.alpha[plane]:.5g}  sigma {n.sigma[plane]:.5g}")
