"""Build models from JSON-serialisable specs, named presets, and their sizes.

A spec is ``{"name": str, "kwargs": dict}``; a ``pipeline`` spec nests the specs of its stages:
``{"name": "pipeline", "kwargs": {"isp": spec | None, "classifier": spec | None, "pattern": str}}``.
Checkpoints store the spec, so :func:`build_model` rebuilds the same architecture.
"""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from dpcal.errors import BadInputError
from dpcal.learn.models.anscombe import AnscombeNet
from dpcal.learn.models.chen_unet import ChenUNet
from dpcal.learn.models.conventional import ConventionalISP
from dpcal.learn.models.mobilenet import MobileNetV1, MobileNetV2
from dpcal.learn.models.pipeline import Pipeline

__all__ = ["MODELS", "PRESETS", "build_model", "model_spec", "preset", "count_params", "count_macs",
           "example_inputs", "model_table", "describe_spec"]

MODELS = {
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "anscombe": AnscombeNet,
    "chen_unet": ChenUNet,
    "conventional_isp": ConventionalISP,
}

PRESETS = ("mobilenet_v1", "mobilenet_v2", "raw-mobilenet_v1", "raw-mobilenet_v2", "joint", "chen_unet",
           "chen_unet-mobilenet_v1", "isp-mobilenet_v1", "anscombe")

_SPEC_ATTR = "_dpcal_spec"


def _check_spec(spec) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise BadInputError(f"a model spec must be {{'name': str, 'kwargs': dict}}, got {spec!r}")
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"model spec {spec.get('name')!r} is not JSON-serialisable: {e}") from None


def build_model(spec: dict) -> nn.Module:
    """Build a module from its spec and remember the spec on it (see :func:`model_spec`).

    Parameters
    ----------
    spec : dict
        ``{"name": one of MODELS or "pipeline", "kwargs": {...}}``.

    Raises
    ------
    BadInputError
        Unknown name, bad keyword arguments, or a spec that is not JSON-serialisable.

    Examples
    --------
    >>> m = build_model({"name": "mobilenet_v1", "kwargs": {"num_classes": 10}})
    >>> model_spec(m)
    {'name': 'mobilenet_v1', 'kwargs': {'num_classes': 10}}
    """
    _check_spec(spec)
    name, kwargs = spec["name"], dict(spec.get("kwargs", {}))
    if name == "pipeline":
        for part in ("isp", "classifier"):
            if kwargs.get(part) is not None:
                kwargs[part] = build_model(kwargs[part])
        cls = Pipeline
    elif name in MODELS:
        cls = MODELS[name]
    else:
        raise BadInputError(f"unknown model {name!r}; use one of {', '.join([*MODELS, 'pipeline'])}")
    try:
        module = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"cannot build model {name!r}: {e}") from None
    setattr(module, _SPEC_ATTR, copy.deepcopy({"name": name, "kwargs": spec.get("kwargs", {})}))
    return module


def model_spec(module: nn.Module) -> dict:
    """The spec ``module`` was built from, so that ``build_model(model_spec(m))`` rebuilds it.

    A :class:`Pipeline` assembled by hand from built stages gets its spec from theirs.

    Raises
    ------
    ValueError
        The module (or a pipeline stage) was not made by :func:`build_model`.
    """
    spec = getattr(module, _SPEC_ATTR, None)
    if spec is not None:
        return copy.deepcopy(spec)
    if isinstance(module, Pipeline):
        parts = {k: None if getattr(module, k) is None else model_spec(getattr(module, k)) for k in ("isp", "classifier")}
        return {"name": "pipeline", "kwargs": {**parts, "pattern": module.pattern}}
    raise ValueError(f"{type(module).__name__} was not built by build_model; it has no spec")


def describe_spec(spec: dict) -> str:
    """A short name of a model spec: ``isp+classifier`` for pipelines (``mosaic`` when no ISP).

    Examples
    --------
    >>> describe_spec(preset("raw-mobilenet_v1", 10)), describe_spec(preset("anscombe"))
    ('mosaic+mobilenet_v1', 'anscombe')
    """
    if spec["name"] != "pipeline":
        return spec["name"]
    k = spec["kwargs"]
    parts = [k["isp"]["name"] if k.get("isp") else "mosaic", k["classifier"]["name"] if k.get("classifier") else None]
    return "+".join(p for p in parts if p)


def preset(name: str, num_classes: int = 1000, pattern: str = "BGGR", sim_mode: str = "realistic") -> dict:
    """The spec of a named model.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS`: ``mobilenet_v1``, ``mobilenet_v2`` (classifiers on RGB);
        ``raw-mobilenet_v1``, ``raw-mobilenet_v2`` (classifier on the 3-channel mosaic);
        ``joint`` (Anscombe network + MobileNet-v1); ``chen_unet`` and ``anscombe``
        (reconstruction only); ``chen_unet-mobilenet_v1``; ``isp-mobilenet_v1`` (conventional
        ISP + MobileNet-v1).
    num_classes : int
    pattern : str
        CFA pattern of the RAW input.
    sim_mode : {"realistic", "reference"}
        Only changes the conventional ISP: ``reference`` data are sRGB values mosaicked as they
        are, so that ISP then applies no white balance and no tone curve.

    Examples
    --------
    >>> preset("joint", 10)["kwargs"]["isp"]
    {'name': 'anscombe', 'kwargs': {'pattern': 'BGGR'}}
    """
    if name not in PRESETS:
        raise BadInputError(f"unknown model preset {name!r}; use one of {', '.join(PRESETS)}")
    if sim_mode not in ("realistic", "reference"):
        raise BadInputError(f"sim_mode must be 'realistic' or 'reference', got {sim_mode!r}")
    cls = {"name": name.rsplit("-", 1)[-1], "kwargs": {"num_classes": int(num_classes)}}
    if name in ("mobilenet_v1", "mobilenet_v2"):
        return cls
    if name in ("chen_unet", "anscombe"):
        return {"name": "pipeline", "kwargs": {"isp": {"name": name, "kwargs": {"pattern": pattern}},
                                               "classifier": None, "pattern": pattern}}
    isp_kwargs = {"pattern": pattern}
    if name.startswith("isp-"):
        isp_kwargs.update({"denoise": "nlm", "tone": "none", "white_balance": "none"} if sim_mode == "reference"
                          else {"denoise": "nlm", "tone": "srgb", "white_balance": "gray_world"})
    isp_name = {"raw": None, "joint": "anscombe", "chen_unet": "chen_unet", "isp": "conventional_isp"}[name.split("-")[0]]
    isp = None if isp_name is None else {"name": isp_name, "kwargs": isp_kwargs}
    if name == "joint":
        cls["name"] = "mobilenet_v1"
    return {"name": "pipeline", "kwargs": {"isp": isp, "classifier": cls, "pattern": pattern}}


def count_params(module: nn.Module) -> int:
    """Number of parameters (each shared tensor once; batch-norm running statistics excluded).

    Examples
    --------
    >>> count_params(build_model(preset("mobilenet_v1")))
    4231976
    """
    return sum(p.numel() for p in module.parameters())


def example_inputs(module: nn.Module, size: int = 128, batch: int = 1, dtype=torch.float32, device=None) -> tuple:
    """Inputs of the right kind for ``module``: ``(rgb,)`` for classifiers, else ``(mosaic, alpha, sigma)``."""
    g = torch.Generator().manual_seed(0)
    if getattr(module, "input_kind", "raw") == "rgb":
        return (torch.rand(batch, 3, size, size, generator=g, dtype=dtype).to(device),)
    mosaic = torch.rand(batch, 1, size, size, generator=g, dtype=dtype).to(device)
    return mosaic, torch.full((batch, 4), 0.01, dtype=dtype, device=device), torch.full((batch, 4), 0.02, dtype=dtype, device=device)


def count_macs(module: nn.Module, inputs: tuple) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (all samples of the batch).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts convolutions
    and matrix products as 2 FLOPs per multiply-accumulate; MACs = FLOPs / 2. Elementwise work
    (activations, normalisation, the Anscombe transforms, the conventional ISP's denoiser) is
    not counted, as in the MAC columns of papers. The module runs in eval mode.

    Examples
    --------
    >>> m = build_model(preset("mobilenet_v1"))
    >>> round(count_macs(m, example_inputs(m, 128)) / 1e6)
    186
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2


def model_table(size: int = 128, classes: int = 1000, pattern: str = "BGGR") -> list[dict]:
    """One row ``{"name", "params", "macs"}`` per preset, MACs of one ``size x size`` image.

    Models are built on PyTorch's ``meta`` device: shapes and counts without allocating or
    computing anything, so the table takes seconds.
    """
    rows = []
    for name in PRESETS:
        with torch.device("meta"):
            module = build_model(preset(name, classes, pattern))
            macs = count_macs(module, example_inputs(module, size, device="meta"))
        rows.append({"name": name, "params": count_params(module), "macs": macs})
    return rows
