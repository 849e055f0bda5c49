"""Camera profiles: a versioned JSON document per camera (schema in ``docs/profiles.md``).

A profile holds the sensor (CFA, levels), the noise (per-ISO table of alpha and sigma per CFA
plane plus an ISO model), the light-level model, an optional PSF field (``.npz`` beside the
JSON) and provenance. Bundled profiles ship in the wheel (``profiles/`` in the repository);
more folders can be added with the ``DPCAL_PROFILE_PATH`` environment variable (``os.pathsep``
separated).

Examples
--------
>>> p = load_profile("nexus6p-rear")
>>> n = p.noise(lux=3)
>>> round(n.alpha["R"], 4), round(n.sigma["R"], 4)
(0.1248, 0.3155)
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

from dpcal._version import __version__
from dpcal.cfa import PATTERNS, PLANES
from dpcal.errors import BadInputError, BadProfileError, DpcalWarning
from dpcal.io.atomic import write_json_atomic
from dpcal.profile.model import (
    ISO_MODELS,
    PARAM_NAMES,
    eval_iso_model,
    fit_iso_model,
    interpolate_table,
    iso_from_lux,
    leave_one_iso_out,
)

log = logging.getLogger("dpcal")

SCHEMA_VERSION = 1
DEFAULT_PROFILE = "nexus6p-rear"
REFERENCE_LIGHT = {"lux_per_light_level": 2000.0, "iso_at_unit_light_level": 100.0}
#: How far beyond its measured ISO range a profile's noise is used without a warning: a third of a
#: stop, one ISO setting of a camera. Farther out the ISO model extrapolates, and badly: fitted
#: without their top ISO, the ELD tables' cts models miss sigma at ISO 6400 by 46-59 % (docs/profiles.md).
ISO_RANGE_TOLERANCE = 2 ** (1 / 3)

__all__ = [
    "SCHEMA_VERSION",
    "DEFAULT_PROFILE",
    "ISO_RANGE_TOLERANCE",
    "NoiseParams",
    "OutOfRangeWarning",
    "Profile",
    "validate_profile",
    "load_profile",
    "find_profile",
    "check_profile_file",
    "list_profiles",
    "profile_dirs",
    "new_profile",
    "fit_iso_model",
    "eval_iso_model",
    "iso_from_lux",
    "leave_one_iso_out",
]


class OutOfRangeWarning(DpcalWarning):
    """Noise was requested at an ISO beyond the range a profile was measured at (its ISO model
    extrapolates there)."""


@dataclasses.dataclass
class NoiseParams:
    """Poisson-Gaussian parameters per CFA plane, in normalised [0, 1] units."""

    alpha: dict[str, float]
    sigma: dict[str, float]
    iso: float

    def to_dict(self) -> dict:
        return {"iso": self.iso, "alpha": dict(self.alpha), "sigma": dict(self.sigma)}


# ----------------------------------------------------------------------------------------------
# validation


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class _Checker:
    def __init__(self):
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def obj(self, d, path: str, required: tuple[str, ...] = ()) -> bool:
        if not isinstance(d, dict):
            self.err(path, f"must be an object, got {type(d).__name__}")
            return False
        for k in required:
            if k not in d:
                self.err(f"{path}.{k}" if path else k, "missing")
        return True

    def num(self, d, key, path, *, min_=None, positive=False, optional=False) -> None:
        p = f"{path}.{key}" if path else key
        if key not in d:
            if not optional:
                self.err(p, "missing")
            return
        v = d[key]
        if v is None and optional:
            return
        if not _is_num(v):
            self.err(p, f"must be a finite number, got {json.dumps(v)}")
        elif positive and not v > 0:
            self.err(p, f"must be > 0, got {v}")
        elif min_ is not None and v < min_:
            self.err(p, f"must be >= {min_}, got {v}")

    def string(self, d, key, path, optional=False) -> None:
        p = f"{path}.{key}" if path else key
        if key not in d:
            if not optional:
                self.err(p, "missing")
            return
        if not isinstance(d[key], str) or not d[key]:
            self.err(p, f"must be a non-empty string, got {json.dumps(d[key])}")

    def planes(self, d, path, *, positive=False) -> None:
        if not self.obj(d, path, PLANES):
            return
        for k in PLANES:
            if k in d:
                self.num(d, k, path, min_=0.0, positive=positive)
        extra = set(d) - set(PLANES)
        if extra:
            self.err(path, f"unknown plane(s) {sorted(extra)}; planes are {', '.join(PLANES)}")


def validate_profile(doc: Any) -> list[str]:
    """All problems of a profile document, each naming the offending field; empty if valid."""
    c = _Checker()
    if not c.obj(doc, "profile", ("schema_version", "id", "maker", "model", "sensor", "noise", "light", "provenance")):
        return c.errors
    sv = doc.get("schema_version")
    if "schema_version" in doc and sv != SCHEMA_VERSION:
        c.err("schema_version", f"{json.dumps(sv)} is not supported (this dpcal reads version {SCHEMA_VERSION})")
    for k in ("id", "maker", "model"):
        c.string(doc, k, "")
    if isinstance(doc.get("id"), str) and not all(ch.isalnum() or ch in "-_." for ch in doc["id"]):
        c.err("id", "use letters, digits, '-', '_' and '.' only")
    s = doc.get("sensor")
    if s is not None and c.obj(s, "sensor", ("cfa_pattern", "black_level", "white_level")):
        if "cfa_pattern" in s and s["cfa_pattern"] not in PATTERNS:
            c.err("sensor.cfa_pattern", f"{json.dumps(s['cfa_pattern'])} is not one of {', '.join(PATTERNS)}")
        c.num(s, "bit_depth", "sensor", positive=True, optional=True)
        if "monochrome" in s and not isinstance(s["monochrome"], bool):
            c.err("sensor.monochrome", f"must be true or false, got {json.dumps(s['monochrome'])}")
        c.num(s, "white_level", "sensor", positive=True)
        bl = s.get("black_level")
        if "black_level" in s:
            if not (isinstance(bl, list) and len(bl) == 4 and all(_is_num(b) and b >= 0 for b in bl)):
                c.err("sensor.black_level", f"must be 4 non-negative numbers (R, Gr, Gb, B), got {json.dumps(bl)}")
            elif _is_num(s.get("white_level")) and max(bl) >= s["white_level"]:
                c.err("sensor.black_level", "must be below sensor.white_level")
        wpi = s.get("white_level_per_iso")
        if wpi is not None:
            if not isinstance(wpi, dict):
                c.err("sensor.white_level_per_iso", "must be an object {iso: level}")
            else:
                for k, v in wpi.items():
                    try:
                        float(k)
                    except ValueError:
                        c.err(f"sensor.white_level_per_iso.{k}", "key must be an ISO number")
                    if not (_is_num(v) and v > 0):
                        c.err(f"sensor.white_level_per_iso.{k}", f"must be > 0, got {json.dumps(v)}")
    n = doc.get("noise")
    if n is not None and c.obj(n, "noise", ("table", "iso_model")):
        table = n.get("table")
        if "table" in n:
            if not isinstance(table, list):
                c.err("noise.table", "must be a list of per-ISO rows")
            else:
                for i, row in enumerate(table):
                    p = f"noise.table[{i}]"
                    if c.obj(row, p, ("iso", "alpha", "sigma")):
                        c.num(row, "iso", p, positive=True)
                        for k in ("alpha", "sigma"):
                            if k in row:
                                c.planes(row[k], f"{p}.{k}")
                        for k in ("alpha_std", "sigma_std"):
                            if k in row and row[k] is not None:
                                c.planes(row[k], f"{p}.{k}")
        m = n.get("iso_model")
        if m is not None and c.obj(m, "noise.iso_model", ("kind", "params")):
            kind = m.get("kind")
            if kind not in ISO_MODELS:
                c.err("noise.iso_model.kind", f"{json.dumps(kind)} is not one of {', '.join(ISO_MODELS)}")
            elif c.obj(m.get("params"), "noise.iso_model.params", PLANES):
                for plane in PLANES:
                    pp = m["params"].get(plane)
                    path = f"noise.iso_model.params.{plane}"
                    if pp is not None and c.obj(pp, path, PARAM_NAMES[kind]):
                        for name in PARAM_NAMES[kind]:
                            if name in pp:
                                nonneg = name in ("a1", "s1", "A", "C")
                                c.num(pp, name, path, min_=0.0 if nonneg else None)
    light = doc.get("light")
    if light is not None and c.obj(light, "light", ("lux_per_light_level", "iso_at_unit_light_level")):
        c.num(light, "lux_per_light_level", "light", positive=True)
        c.num(light, "iso_at_unit_light_level", "light", positive=True)
    psf = doc.get("psf")
    if psf is not None and c.obj(psf, "psf", ("file",)):
        c.string(psf, "file", "psf")
    prov = doc.get("provenance")
    if prov is not None and c.obj(prov, "provenance", ("method",)):
        c.string(prov, "method", "provenance")
    return c.errors


# ----------------------------------------------------------------------------------------------
# the Profile object


class Profile:
    """A validated camera profile.

    Create with :func:`load_profile` (bundled id or path), :meth:`from_dict` or
    :func:`new_profile`. ``doc`` is the JSON document; ``path`` the file it came from.
    """

    def __init__(self, doc: dict, path: Path | None = None):
        errors = validate_profile(doc)
        if errors:
            where = f"{path}: " if path else ""
            more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
            raise BadProfileError(f"{where}invalid profile: {errors[0]}{more}")
        self.doc = doc
        self.path = Path(path) if path else None

    @classmethod
    def from_dict(cls, doc: dict) -> "Profile":
        return cls(copy.deepcopy(doc))

    # identity and sensor ------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.doc["id"]

    @property
    def pattern(self) -> str:
        return self.doc["sensor"]["cfa_pattern"]

    @property
    def bit_depth(self) -> int | None:
        return self.doc["sensor"].get("bit_depth")

    @property
    def black_level(self) -> list[float]:
        return list(self.doc["sensor"]["black_level"])

    def white_level(self, iso: float | None = None) -> float:
        """Saturation in DN, per ISO where the profile has it (nearest measured ISO)."""
        s = self.doc["sensor"]
        wpi = s.get("white_level_per_iso")
        if iso is not None and wpi:
            best = min(wpi, key=lambda k: abs(math.log(float(k)) - math.log(iso)))
            return float(wpi[best])
        return float(s["white_level"])

    # noise --------------------------------------------------------------------------------
    @property
    def table(self) -> list[dict]:
        return self.doc["noise"]["table"]

    @property
    def iso_model(self) -> dict:
        return self.doc["noise"]["iso_model"]

    def iso_for_lux(self, lux: float) -> float:
        return iso_from_lux(lux, self.doc["light"])

    def noise(self, iso: float | None = None, lux: float | None = None, source: str = "model") -> NoiseParams:
        """Poisson-Gaussian parameters at an ISO or at an illuminance in lux.

        Parameters
        ----------
        iso, lux : float
            Exactly one of them.
        source : {"model", "table"}
            ``model`` evaluates the ISO model (smooth, extrapolates); ``table`` interpolates
            the measured per-ISO table log-log and falls back to the model outside it.
        """
        if (iso is None) == (lux is None):
            raise BadInputError("give exactly one of `iso` and `lux`")
        if lux is not None:
            iso = self.iso_for_lux(lux)
        iso = float(iso)
        if not iso > 0 or not math.isfinite(iso):
            raise BadInputError(f"ISO must be a positive number, got {iso}")
        if source not in ("model", "table"):
            raise BadInputError(f"noise source must be 'model' or 'table', got {source!r}")
        self.warn_if_extrapolated(iso, iso, stacklevel=3)
        m = self.iso_model
        alpha, sigma = {}, {}
        for plane in PLANES:
            got = interpolate_table(self.table, iso, plane) if source == "table" else None
            if got is None:
                got = eval_iso_model(m["kind"], m["params"][plane], iso)
            alpha[plane], sigma[plane] = got
        return NoiseParams(alpha=alpha, sigma=sigma, iso=iso)

    def measured_iso_range(self) -> tuple[float, float] | None:
        """Lowest and highest ISO of the noise table; None for a single-ISO profile, whose ISO
        model (the reference code's linear one) is an assumption rather than a fit over a range."""
        isos = sorted({float(r["iso"]) for r in self.table})
        return (isos[0], isos[-1]) if len(isos) > 1 else None

    def warn_if_extrapolated(self, iso_lo: float, iso_hi: float, *, stacklevel: int = 2) -> bool:
        """Issue an :class:`OutOfRangeWarning` if ``[iso_lo, iso_hi]`` leaves the measured ISO
        range by more than :data:`ISO_RANGE_TOLERANCE`; return whether it did.

        Examples
        --------
        >>> import warnings
        >>> p = load_profile("eld-sonya7s2")
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     p.warn_if_extrapolated(800, 8000), p.warn_if_extrapolated(100, 66667)
        (False, True)
        >>> print(w[0].message)
        profile eld-sonya7s2 is measured at ISO 100-6400; ISO up to 66667 is extrapolated by its cts ISO model
        """
        rng = self.measured_iso_range()
        if rng is None:
            return False
        lo, hi = rng
        below, above = iso_lo < lo / ISO_RANGE_TOLERANCE, iso_hi > hi * ISO_RANGE_TOLERANCE
        if not (below or above):
            return False
        asked = " and ".join(([f"ISO down to {iso_lo:.3g}"] if below else []) + ([f"ISO up to {iso_hi:.0f}"] if above else []))
        warnings.warn(OutOfRangeWarning(
            f"profile {self.id} is measured at ISO {lo:g}-{hi:g}; {asked} is extrapolated by its "
            f"{self.iso_model['kind']} ISO model"), stacklevel=stacklevel)
        return True

    def psf_path(self) -> Path | None:
        """Path of the attached PSF field ``.npz`` (relative to the profile file), or None."""
        psf = self.doc.get("psf")
        if not psf:
            return None
        p = Path(psf["file"])
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    # persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the profile as JSON, atomically."""
        write_json_atomic(path, self.doc)
        self.path = Path(path)

    def summary(self) -> dict:
        return {
            "id": self.id,
            "maker": self.doc["maker"],
            "model": self.doc["model"],
            "cfa_pattern": self.pattern,
            "isos": [r["iso"] for r in self.table],
            "iso_model": self.iso_model["kind"],
            "has_psf": bool(self.doc.get("psf")),
            "source": self.doc["provenance"].get("citation") or self.doc["provenance"].get("source"),
            "path": str(self.path) if self.path else None,
        }


def new_profile(
    id: str,
    maker: str,
    model: str,
    *,
    pattern: str,
    black_level: list[float],
    white_level: float,
    table: list[dict],
    iso_model: str = "cts",
    bit_depth: int | None = None,
    light: dict | None = None,
    provenance: dict | None = None,
    description: str | None = None,
) -> Profile:
    """Build a profile from a per-ISO noise table, fitting the ISO model per plane.

    ``table`` rows are ``{"iso", "alpha": {plane: v}, "sigma": {plane: v}}`` with optional
    ``alpha_std``/``sigma_std``. ``cts`` falls back to ``linear`` with a single ISO.
    """
    if iso_model == "cts" and len({r["iso"] for r in table}) < 2:
        iso_model = "linear"
    params = {}
    for plane in PLANES:
        has_std = all(r.get("alpha_std") and r.get("sigma_std") for r in table)
        params[plane] = fit_iso_model(
            iso_model,
            [r["iso"] for r in table],
            [r["alpha"][plane] for r in table],
            [r["sigma"][plane] for r in table],
            [r["alpha_std"][plane] for r in table] if has_std else None,
            [r["sigma_std"][plane] for r in table] if has_std else None,
        )
    prov = {"dpcal_version": __version__, "date": datetime.date.today().isoformat()}
    prov.update(provenance or {"method": "manual"})
    doc = {
        "schema_version": SCHEMA_VERSION,
        "id": id,
        "maker": maker,
        "model": model,
        "sensor": {
            "cfa_pattern": pattern,
            "bit_depth": bit_depth,
            "black_level": [float(b) for b in black_level],
            "white_level": float(white_level),
        },
        "noise": {"table": sorted(table, key=lambda r: r["iso"]), "iso_model": {"kind": iso_model, "params": params}},
        "light": dict(light or REFERENCE_LIGHT),
        "provenance": prov,
    }
    if bit_depth is None:
        del doc["sensor"]["bit_depth"]
    if description:
        doc["description"] = description
    return Profile(doc)


# ----------------------------------------------------------------------------------------------
# finding profiles


def _bundled_dir() -> Path:
    try:
        from importlib.resources import files

        d = Path(str(files("dpcal._bundled")))
        if d.is_dir():
            return d
    except (ModuleNotFoundError, TypeError):
        pass
    # A source checkout used without installation.
    return Path(__file__).resolve().parents[2] / "profiles"


def profile_dirs() -> list[Path]:
    """Folders searched for profiles: ``DPCAL_PROFILE_PATH`` entries, then the bundled ones."""
    extra = [Path(p) for p in os.environ.get("DPCAL_PROFILE_PATH", "").split(os.pathsep) if p]
    return extra + [_bundled_dir()]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadProfileError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except OSError as e:
        raise BadProfileError(f"{path}: cannot read ({e.strerror})") from None


def load_profile(id_or_path: str | os.PathLike | Profile) -> Profile:
    """Load a profile by bundled id (e.g. ``"nexus6p-rear"``) or from a JSON file path."""
    if isinstance(id_or_path, Profile):
        return id_or_path
    p = find_profile(id_or_path)
    return Profile(_read_json(p), p)


def find_profile(id_or_path: str | os.PathLike) -> Path:
    """The JSON file of a bundled id (searched in :func:`profile_dirs`) or a given path."""
    s = str(id_or_path)
    p = Path(s)
    if s.endswith(".json") or os.sep in s or p.is_file():
        if not p.is_file():
            raise BadProfileError(f"{p}: no such profile file")
        return p
    for d in profile_dirs():
        cand = d / f"{s}.json"
        if cand.is_file():
            return cand
    known = ", ".join(sorted(x["id"] for x in list_profiles()))
    raise BadProfileError(f"unknown profile {s!r}; known: {known} (or give a .json path)")


def check_profile_file(id_or_path: str | os.PathLike) -> tuple[Path, list[str]]:
    """Validate a profile file (or bundled id) as :func:`load_profile` and ``simulate --psf``
    would use it: the document (:func:`validate_profile`) and its PSF file, which must exist.

    Returns the file and its problems (empty if valid); an unknown id, a missing file or bad
    JSON are problems too.

    Examples
    --------
    >>> path, problems = check_profile_file("eld-sonya7s2")
    >>> path.name, problems
    ('eld-sonya7s2.json', [])
    """
    try:
        path = find_profile(id_or_path)
        doc = _read_json(path)
    except BadProfileError as e:
        return Path(str(id_or_path)), [str(e)]
    errors = validate_profile(doc)
    psf = doc.get("psf") if isinstance(doc, dict) else None
    if not errors and psf:
        f = Path(psf["file"]) if Path(psf["file"]).is_absolute() else path.parent / psf["file"]
        if not f.is_file():
            errors.append(f"psf.file: {psf['file']!r} not found (looked for {f})")
    return path, errors


def list_profiles() -> list[dict]:
    """Summaries of every profile found (first folder wins for a duplicated id)."""
    seen: dict[str, dict] = {}
    for d in profile_dirs():
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.json")):
            if f.stem in seen:
                continue
            try:
                seen[f.stem] = load_profile(f).summary()
            except BadProfileError as e:
                log.warning("skipping %s", e)
    return [seen[k] for k in sorted(seen)]
