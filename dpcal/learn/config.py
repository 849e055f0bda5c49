"""Training settings: one dataclass, two named recipes, TOML files and command-line overrides.

Resolution order (later wins): the recipe's defaults -> a TOML file (``--config``) -> options
given on the command line. The resolved settings are saved in the run folder
(``config.json``) and in every checkpoint, so a run can be resumed, compared and evaluated
without the command that started it.

Recipes
-------
``default``
    Converges on a 10-class dataset (Imagenette) in about 15 epochs on a CPU: AdamW (lr 2e-3,
    weight decay 0.05 on classifier weights only), batch 64, one epoch of linear warm-up then a
    cosine decay to zero, label smoothing 0.1. Fine-tuning from ``--init`` uses lr 1e-3.
``paper``
    The Dirty Pixels reference recipe: RMSProp (decay 0.9, momentum 0.9, eps 1.0), lr 4.5e-4
    decayed x0.94 every 2 epochs, weight decay 4e-5 on the classifier only, batch 1024, no
    label smoothing. Made for ImageNet-scale data and many GPU-days.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from dpcal.errors import BadInputError

MODES = ("joint", "raw", "clean", "isp", "unet", "reconstruct")
RECIPES = ("default", "paper")
OPTIMIZERS = ("adamw", "rmsprop")
SCHEDULES = ("cosine", "step")
CLASSIFIERS = ("mobilenet_v1", "mobilenet_v2")

__all__ = ["MODES", "RECIPES", "TrainConfig", "load_toml", "resolve_config"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (see the module docstring for the recipes).

    The fields split into the *model* (``mode``, ``classifier``, ``width``, ``iterations``,
    ``inverse``), the *data* (``data``, ``val_data``, ``profile``, ``lux``, ``sim_mode``,
    ``size``), the *optimisation* (``steps``/``epochs``, ``batch_size``, ``lr``, ...) and the
    *run* (``seed``, ``workers``, ``out``, ``init``, ``checkpoint_every``, ...). ``--resume``
    refuses a changed model or data section (``MODEL_KEYS``, ``DATA_KEYS``).
    """

    mode: str = "joint"
    recipe: str = "default"
    # model
    classifier: str = "mobilenet_v1"
    width: float | None = None  # classifier width multiplier (None: the model's own, 1.0 / 1.4)
    iterations: int = 1
    inverse: str = "asymptotic"
    # data
    data: str = ""
    val_data: str | None = None
    profile: str = "nexus6p-rear"
    lux: tuple[float, float] = (3.0, 3.0)
    sim_mode: str = "reference"
    size: int = 128
    # optimisation
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    decay_epochs: float = 2.0
    decay_rate: float = 0.94
    label_smoothing: float = 0.1
    grad_clip: float | None = 5.0
    stage1_fraction: float = 0.2
    # run
    seed: int = 0
    workers: int = 1
    init: str | None = None
    checkpoint_every: int = 100
    log_every: int = 10
    val_every: int | None = None
    val_max: int | None = None
    channels_last: bool = True

    MODEL_KEYS = ("mode", "classifier", "width", "iterations", "inverse")
    DATA_KEYS = ("data", "profile", "lux", "sim_mode", "size", "seed", "batch_size")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lux"] = list(self.lux)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BadInputError(f"unknown training setting(s): {', '.join(unknown)}")
        d = dict(d)
        if "lux" in d:
            d["lux"] = _lux(d["lux"])
        return cls(**d)

    def section(self, keys) -> dict:
        d = self.to_dict()
        return {k: d[k] for k in keys}

    @property
    def needs_simulation(self) -> bool:
        """Everything but ``clean`` consumes noisy RAW mosaics."""
        return self.mode != "clean"


_RECIPE_DEFAULTS = {
    "default": {},
    "paper": {"optimizer": "rmsprop", "schedule": "step", "lr": 4.5e-4, "weight_decay": 4e-5, "batch_size": 1024,
              "label_smoothing": 0.0, "warmup_epochs": 0.0, "grad_clip": None},
}


def _lux(v) -> tuple[float, float]:
    from dpcal.sim.config import parse_lux

    return parse_lux(v if isinstance(v, (int, float)) else list(v))


def load_toml(path: str | Path) -> dict:
    """Read a TOML settings file: top-level keys are :class:`TrainConfig` fields.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "run.toml")
    >>> _ = open(p, "w").write('mode = "raw"\\nlux = [2, 20]\\nepochs = 15\\n')
    >>> load_toml(p)
    {'mode': 'raw', 'lux': [2, 20], 'epochs': 15}
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise BadInputError(f"cannot read the settings file {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInputError(f"{p} is not valid TOML: {e}") from None


def resolve_config(overrides: dict[str, Any], toml_path: str | Path | None = None) -> TrainConfig:
    """Recipe defaults, then the TOML file, then ``overrides`` (``None`` values are ignored).

    Fine-tuning runs (``init`` given) default to half the learning rate of the recipe.

    Raises
    ------
    BadInputError
        Unknown settings or values out of range, naming the setting.

    Examples
    --------
    >>> c = resolve_config({"mode": "raw", "data": "x", "epochs": 2})
    >>> c.optimizer, c.lr, c.batch_size
    ('adamw', 0.002, 64)
    >>> resolve_config({"recipe": "paper", "data": "x", "steps": 10}).optimizer
    'rmsprop'
    """
    from_file = load_toml(toml_path) if toml_path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    recipe = given.get("recipe", from_file.get("recipe", "default"))
    if recipe not in RECIPES:
        raise BadInputError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    d: dict[str, Any] = dict(_RECIPE_DEFAULTS[recipe])
    d.update(from_file)
    d.update(given)
    d["recipe"] = recipe
    if d.get("init") and "lr" not in from_file and "lr" not in given:
        d["lr"] = dataclasses.replace(TrainConfig(), **_RECIPE_DEFAULTS[recipe]).lr / 2
    cfg = TrainConfig.from_dict(d)
    _validate(cfg)
    return cfg


def _validate(c: TrainConfig) -> None:
    def bad(name: str, msg: str):
        raise BadInputError(f"`{name}` {msg}")

    if c.mode not in MODES:
        bad("mode", f"must be one of {', '.join(MODES)}, got {c.mode!r}")
    if c.classifier not in CLASSIFIERS:
        bad("classifier", f"must be one of {', '.join(CLASSIFIERS)}, got {c.classifier!r}")
    if c.optimizer not in OPTIMIZERS:
        bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}")
    if c.schedule not in SCHEDULES:
        bad("schedule", f"must be one of {', '.join(SCHEDULES)}, got {c.schedule!r}")
    if c.sim_mode not in ("reference", "realistic"):
        bad("sim_mode", f"must be 'reference' or 'realistic', got {c.sim_mode!r}")
    if c.inverse not in ("asymptotic", "closed_form"):
        bad("inverse", f"must be 'asymptotic' or 'closed_form', got {c.inverse!r}")
    if not c.data:
        bad("data", "is required (a folder written by `dpcal simulate`, or class folders of clean images)")
    if (c.steps is None) == (c.epochs is None):
        raise BadInputError("give exactly one of `steps` and `epochs`")
    if c.steps is not None and c.steps < 0:
        bad("steps", f"must be >= 0, got {c.steps}")
    if c.steps == 0 and c.mode != "isp":
        bad("steps", "0 is only meaningful with `mode=isp` (a conventional ISP in front of an `init` classifier, as is)")
    if c.epochs is not None and not (c.epochs > 0 and math.isfinite(c.epochs)):
        bad("epochs", f"must be a positive number, got {c.epochs}")
    for name in ("batch_size", "size", "iterations", "checkpoint_every", "log_every"):
        if getattr(c, name) < 1:
            bad(name, f"must be >= 1, got {getattr(c, name)}")
    if c.size % 2:
        bad("size", f"must be even (whole 2x2 CFA tiles), got {c.size}")
    if not c.lr > 0:
        bad("lr", f"must be positive, got {c.lr}")
    if c.workers < 0:
        bad("workers", f"must be >= 0, got {c.workers}")
    if not 0 <= c.stage1_fraction < 1:
        bad("stage1_fraction", f"must be in [0, 1), got {c.stage1_fraction}")
    if c.width is not None and not c.width > 0:
        bad("width", f"must be positive, got {c.width}")
