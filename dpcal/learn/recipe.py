"""What a training configuration builds: the model, its phases, the optimiser and the schedule.

See :mod:`dpcal.learn.trainer` for the table of modes and phases.
"""

from __future__ import annotations

import math

import torch

from dpcal.errors import BadInputError
from dpcal.learn.checkpoint import load_checkpoint
from dpcal.learn.config import TrainConfig

__all__ = ["build_run_model", "classifier_of", "init_from", "lr_factor", "make_optimizer", "model_spec_for",
           "phase_at", "plan_phases", "set_trainable"]


# -- model -------------------------------------------------------------------------------------
def _classifier_spec(cfg: TrainConfig, num_classes: int) -> dict:
    kwargs = {"num_classes": int(num_classes)}
    if cfg.width is not None:
        kwargs["width"] = float(cfg.width)
    return {"name": cfg.classifier, "kwargs": kwargs}


def model_spec_for(cfg: TrainConfig, num_classes: int, pattern: str) -> dict:
    """The model a training configuration builds (a :func:`dpcal.learn.models.build_model` spec)."""
    from dpcal.learn.models import preset

    cls = _classifier_spec(cfg, num_classes)
    if cfg.mode == "clean":
        return cls
    anscombe = {"name": "anscombe", "kwargs": {"pattern": pattern, "iterations": cfg.iterations, "inverse": cfg.inverse}}
    isp = {
        "raw": None,
        "joint": anscombe,
        "reconstruct": anscombe,
        "unet": {"name": "chen_unet", "kwargs": {"pattern": pattern}},
        "isp": preset("isp-mobilenet_v1", num_classes, pattern, cfg.sim_mode)["kwargs"]["isp"],
    }[cfg.mode]
    return {"name": "pipeline", "kwargs": {"isp": isp, "classifier": None if cfg.mode == "reconstruct" else cls,
                                           "pattern": pattern}}


def build_run_model(cfg: TrainConfig, num_classes: int, pattern: str):
    """Build the model of ``cfg`` (initialised from ``cfg.seed``) and its spec."""
    from dpcal.learn.models import build_model

    spec = model_spec_for(cfg, num_classes, pattern)
    torch.manual_seed(cfg.seed)
    return build_model(spec), spec


def classifier_of(model):
    return model if getattr(model, "input_kind", "raw") == "rgb" else getattr(model, "classifier", None)


def init_from(model, cfg: TrainConfig, classes: list[str]) -> str:
    """Load the classifier (and a same-type ISP) of the ``--init`` checkpoint into ``model``."""
    from dpcal.learn.models import build_model

    doc = load_checkpoint(cfg.init)
    src = build_model(doc["model"])
    src.load_state_dict(doc["state_dict"])
    dst_cls, src_cls = classifier_of(model), classifier_of(src)
    if dst_cls is None or src_cls is None:
        raise BadInputError(f"`init` {cfg.init}: it has no classifier to start from (model {doc['model']['name']!r})")
    from dpcal.learn.models import model_spec

    a, b = model_spec(dst_cls), model_spec(src_cls)
    if a != b:
        raise BadInputError(f"`init` {cfg.init}: its classifier is {b['name']} {b['kwargs']}, this run's is "
                            f"{a['name']} {a['kwargs']}; use a checkpoint of the same classifier and class count")
    if list(doc.get("classes", [])) != list(classes):
        raise BadInputError(f"`init` {cfg.init}: it was trained on other classes than this data")
    dst_cls.load_state_dict(src_cls.state_dict())
    loaded = "classifier"
    isp_dst, isp_src = getattr(model, "isp", None), getattr(src, "isp", None)
    if isp_dst is not None and isp_src is not None and model_spec(isp_dst) == model_spec(isp_src):
        isp_dst.load_state_dict(isp_src.state_dict())
        loaded = "classifier and ISP"
    return loaded


def plan_phases(cfg: TrainConfig, total: int, has_targets: bool) -> list[dict]:
    """``[{"name", "start", "end", "train": "isp"|"classifier"|"all", "loss": "l1"|"ce"}]``."""
    if cfg.mode == "reconstruct":
        return [{"name": "reconstruct", "start": 0, "end": total, "train": "isp", "loss": "l1"}]
    if cfg.mode in ("joint", "unet"):
        n1 = int(round(cfg.stage1_fraction * total)) if has_targets else 0
        second = {"name": "joint", "train": "all"} if cfg.mode == "joint" else {"name": "classifier", "train": "classifier"}
        out = [{"name": "isp", "start": 0, "end": n1, "train": "isp", "loss": "l1"}] if n1 else []
        return out + [{**second, "start": n1, "end": total, "loss": "ce"}]
    train = "classifier" if cfg.mode == "isp" else "all"
    return [{"name": cfg.mode, "start": 0, "end": total, "train": train, "loss": "ce"}]


def phase_at(phases: list[dict], step: int) -> dict:
    return next(p for p in phases if p["start"] <= step < p["end"])


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """Weight decay on the classifier's weight matrices and kernels only (not biases, norms or the ISP)."""
    cls = classifier_of(model)
    cls_ids = {id(p) for p in cls.parameters()} if cls is not None else set()
    decay, rest = [], []
    for p in model.parameters():
        (decay if id(p) in cls_ids and p.ndim > 1 else rest).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]


def make_optimizer(model, cfg: TrainConfig):
    groups = param_groups(model, cfg)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.9, momentum=0.9, eps=1.0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at ``step`` (warm-up then cosine to 0, or the paper's step decay).

    Examples
    --------
    >>> c = TrainConfig(data="x", steps=100, warmup_epochs=1)
    >>> [round(lr_factor(c, s, 100, 10), 3) for s in (0, 9, 10, 99)]
    [0.1, 1.0, 1.0, 0.0]
    """
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "step":
        return cfg.decay_rate ** math.floor(step / steps_per_epoch / cfg.decay_epochs)
    span = max(total - warm - 1, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warm, span) / span))


def set_trainable(model, which: str) -> None:
    isp = getattr(model, "isp", None)
    cls = classifier_of(model)
    for p in model.parameters():
        p.requires_grad_(which == "all")
    if which == "isp" and isp is not None:
        for p in isp.parameters():
            p.requires_grad_(True)
    if which == "classifier" and cls is not None:
        for p in cls.parameters():
            p.requires_grad_(True)
    # A frozen stage also keeps its batch-norm statistics.
    if isp is not None:
        isp.train(which in ("all", "isp"))
