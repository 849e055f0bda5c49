"""Models of the learning half: learned and fixed ISP stages, classifiers, and their pipelines.

Conventions shared by every module here:

- RAW input: a normalised single-channel mosaic ``mosaic (B, 1, H, W)`` in [0, 1] with
  per-CFA-plane noise parameters ``alpha, sigma (B, 4)`` in plane order ``R, Gr, Gb, B``; the
  CFA pattern is a constructor argument.
- An ISP stage maps ``(mosaic, alpha, sigma) -> rgb (B, 3, H, W)`` in [0, 1]:
  :class:`AnscombeNet`, :class:`ChenUNet`, :class:`ConventionalISP`.
- A classifier maps ``rgb (B, 3, H, W)`` in [0, 1] to logits ``(B, K)`` (it maps its input to
  [-1, 1] itself): :class:`MobileNetV1`, :class:`MobileNetV2`.
- :class:`Pipeline` chains a stage and a classifier; :func:`build_model` / :func:`model_spec`
  turn JSON specs into modules and back; :func:`preset` names the paper's models.
"""

from dpcal.learn.models.anscombe import (
    AnscombeNet,
    AnscombeTransform,
    PriorUNet,
    SoftProjection,
    generalized_anscombe,
    inverse_anscombe_asymptotic,
    inverse_anscombe_closed_form,
    soft_projection,
)
from dpcal.learn.models.chen_unet import ChenUNet
from dpcal.learn.models.conventional import ConventionalISP, demosaic_mhc
from dpcal.learn.models.mobilenet import MobileNetV1, MobileNetV2
from dpcal.learn.models.pipeline import Pipeline
from dpcal.learn.models.registry import (
    MODELS,
    PRESETS,
    build_model,
    count_macs,
    count_params,
    describe_spec,
    example_inputs,
    model_spec,
    model_table,
    preset,
)

__all__ = [
    "AnscombeNet", "AnscombeTransform", "PriorUNet", "SoftProjection", "generalized_anscombe",
    "inverse_anscombe_asymptotic", "inverse_anscombe_closed_form", "soft_projection", "ChenUNet",
    "ConventionalISP", "demosaic_mhc", "MobileNetV1", "MobileNetV2", "Pipeline", "MODELS", "PRESETS",
    "build_model", "count_macs", "count_params", "describe_spec", "example_inputs", "model_spec", "model_table", "preset",
]
