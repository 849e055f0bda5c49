"""Simulator settings (no heavy imports, so that bad settings fail fast)."""

from __future__ import annotations

import dataclasses
import math

from dpcal.cfa import validate_pattern
from dpcal.errors import BadInputError
from dpcal.physics.tone import LINEARIZE  # noqa: F401  (settings validation)

MODES = ("realistic", "reference")
#: Where a small image sits on the sensor when a PSF field is applied. ``sensor``: the image
#: shows the (centred, same-aspect) sensor frame, kernels shrink with the image; the others:
#: the image is a full-resolution crop centred at that fraction of the sensor diagonal
#: (the reference code's center / offaxis / periphery PSF positions).
PSF_POSITIONS = {"sensor": None, "center": 0.5, "offaxis": 0.9, "periphery": 1.0}
REFERENCE_PATTERN = "BGGR"

__all__ = ["LINEARIZE", "MODES", "PSF_POSITIONS", "REFERENCE_PATTERN", "SimConfig", "parse_lux"]


def parse_lux(lux) -> tuple[float, float]:
    """``L`` or ``(L,)`` or ``(LO, HI)`` -> ``(lo, hi)``; raises :class:`BadInputError` if invalid.

    Examples
    --------
    >>> parse_lux(3), parse_lux([2, 20])
    ((3.0, 3.0), (2.0, 20.0))
    """
    vals = [lux] if isinstance(lux, (int, float)) else list(lux)
    if len(vals) not in (1, 2):
        raise BadInputError(f"`lux` takes one value L or two values LO HI, got {len(vals)}", param="lux")
    try:
        vals = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise BadInputError(f"`lux` values must be numbers, got {lux!r}", param="lux") from None
    for v in vals:
        if not (v > 0 and math.isfinite(v)):
            raise BadInputError(f"lux must be a positive number, got {v:g}")
    lo, hi = vals[0], vals[-1]
    if lo > hi:
        raise BadInputError(f"`lux` LO HI needs LO <= HI, got {lo:g} {hi:g}", param="lux")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Simulator settings; ``None`` means "the mode's default" (see :meth:`resolve`)."""

    mode: str = "realistic"
    lux: tuple[float, float] = (3.0, 3.0)
    linearize: str | None = None
    pattern: str | None = None
    quantize: bool | None = None
    psf: bool = False
    psf_position: str = "sensor"
    noise_source: str = "model"

    def resolve(self, profile) -> "SimConfig":
        """Fill the mode's defaults and validate against ``profile``.

        Raises
        ------
        BadInputError
            Unknown values, a setting the reference mode fixes, or a PSF request for a
            profile without a PSF field.
        """
        if self.mode not in MODES:
            raise BadInputError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        lux = parse_lux(self.lux)
        if self.linearize is not None and self.linearize not in LINEARIZE:
            raise BadInputError(f"unknown linearisation {self.linearize!r}; use one of {', '.join(LINEARIZE)}")
        if self.psf_position not in PSF_POSITIONS:
            raise BadInputError(f"unknown PSF position {self.psf_position!r}; use one of {', '.join(PSF_POSITIONS)}")
        if self.noise_source not in ("model", "table"):
            raise BadInputError(f"noise source must be 'model' or 'table', got {self.noise_source!r}")
        pattern = validate_pattern(self.pattern) if self.pattern is not None else None
        if self.mode == "reference":
            fixed = []
            if pattern not in (None, REFERENCE_PATTERN):
                fixed.append(f"the pattern ({REFERENCE_PATTERN})")
            if self.linearize not in (None, "none"):
                fixed.append("no linearisation (sRGB used as linear)")
            if self.quantize:
                fixed.append("no quantisation")
            if fixed:
                raise BadInputError(
                    f"`mode=reference` fixes {', '.join(fixed)}; drop those options or use `mode=realistic`"
                )
            pattern, lin, quant = REFERENCE_PATTERN, "none", False
        else:
            pattern = pattern or profile.pattern
            lin = self.linearize or "unprocess"
            quant = True if self.quantize is None else bool(self.quantize)
        if self.psf:
            p = profile.psf_path()
            if p is None:
                raise BadInputError(
                    f"profile {profile.id!r} has no PSF field; drop `psf` or use a profile with a 'psf' entry"
                )
            if not p.is_file():
                raise BadInputError(f"profile {profile.id!r}: its PSF field {p} does not exist")
        return dataclasses.replace(self, lux=lux, pattern=pattern, linearize=lin, quantize=quant)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lux"] = list(self.lux)
        return d
