"""How task losses combine into one: a small named set, one module each, in the LOSS_WEIGHTINGS registry.

`mtpeft methods` lists them with one line each (mtpeft.catalogue.LOSS_WEIGHTING_DESCRIPTIONS, which a
test keeps equal to this registry); `loss_weighting_options` in a train config sets their options.
"""

from __future__ import annotations

from typing import Any

from mtpeft.registry import Registry
from mtpeft.training.loss_weighting.base import LossWeighting, StepLosses
from mtpeft.training.loss_weighting.equal import EqualWeighting
from mtpeft.training.loss_weighting.famo import FamoWeighting
from mtpeft.training.loss_weighting.gradnorm import GradNormWeighting
from mtpeft.training.loss_weighting.learned import LearnedWeighting
from mtpeft.training.loss_weighting.normalized import NormalizedWeighting
from mtpeft.training.loss_weighting.uncertainty import UncertaintyWeighting

LOSS_WEIGHTINGS: Registry[type[LossWeighting]] = Registry("loss weighting", field="loss_weighting")
for _weighting in (
    EqualWeighting,
    LearnedWeighting,
    UncertaintyWeighting,
    NormalizedWeighting,
    GradNormWeighting,
    FamoWeighting,
):
    LOSS_WEIGHTINGS.register(_weighting.name, _weighting)


def build_weighting(name: str, tasks: list[str], options: dict[str, Any] | None = None) -> LossWeighting:
    """The weighting `name` over `tasks`; unknown names and options are ConfigErrors naming the field."""
    return LOSS_WEIGHTINGS[name](list(tasks), **(options or {}))


__all__ = ["LOSS_WEIGHTINGS", "LossWeighting", "StepLosses", "build_weighting"]
