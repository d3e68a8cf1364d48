"""`adapter` (serial, Houlsby placement by default) and `parallel-adapter`, on our peft bottleneck tuner."""

from __future__ import annotations

from typing import Any

from mtpeft.catalogue import METHOD_DESCRIPTIONS
from mtpeft.errors import ConfigError
from mtpeft.models.loading import ModelInfo
from mtpeft.peft_methods.bottleneck import BottleneckConfig
from mtpeft.peft_methods.peft_backed import PeftLibraryMethod, target_list

# A bottleneck's nonlinearity makes a weighted sum of two adapters no sum of their effects, and the
# tuner (ours, peft_methods/bottleneck) has no add_weighted_adapter.
BOTTLENECK_NOT_MERGEABLE = "bottleneck adapters have no add_weighted_adapter in peft (a nonlinear module)"

# Where serial adapters go when target_modules is not given.
PLACEMENTS = {
    "houlsby": lambda info: [
        *info.attention_output_modules,
        *info.ffn_output_modules,
    ],  # after both sublayers
    "pfeiffer": lambda info: list(info.ffn_output_modules),  # after the FFN only
}


def _common(info: ModelInfo) -> dict[str, Any]:
    return {"bottleneck": 64, "non_linearity": "relu", "dropout": 0.0}


def _serial_defaults(info: ModelInfo) -> dict[str, Any]:
    # target_modules [] would mean "unknown model family"; None means "from placement".
    return {**_common(info), "scaling": 1.0, "placement": "houlsby", "target_modules": None}


def _parallel_defaults(info: ModelInfo) -> dict[str, Any]:
    # scaling 4: He et al. (2022)'s best setting for parallel adapters.
    return {**_common(info), "scaling": 4.0, "target_modules": list(info.ffn_block_modules)}


def _serial_targets(info: ModelInfo, options: dict[str, Any]) -> str | list[str]:
    if options["target_modules"] is not None:
        return target_list(options["target_modules"])
    placement = options["placement"]
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"unknown adapter placement '{placement}'; choose one of: {', '.join(PLACEMENTS)}",
            field="placement",
        )
    targets = PLACEMENTS[placement](info)
    if not targets:
        raise ConfigError(
            f"no default adapter positions for model type '{info.model_type}'; "
            "pass the output projections as option 'target_modules'",
            field="target_modules",
        )
    return targets


def _config(
    info: ModelInfo, options: dict[str, Any], targets: str | list[str], *, parallel: bool
) -> BottleneckConfig:
    return BottleneckConfig(
        task_type=info.peft_task_type,
        target_modules=targets,
        bottleneck_size=options["bottleneck"],
        non_linearity=options["non_linearity"],
        dropout=options["dropout"],
        scaling=options["scaling"],
        parallel=parallel,
    )


ADAPTER = PeftLibraryMethod(
    name="adapter",
    description=METHOD_DESCRIPTIONS["adapter"],
    defaults=_serial_defaults,
    make_config=lambda info, options: _config(info, options, _serial_targets(info, options), parallel=False),
    merge_problem=BOTTLENECK_NOT_MERGEABLE,
)

PARALLEL_ADAPTER = PeftLibraryMethod(
    name="parallel-adapter",
    description=METHOD_DESCRIPTIONS["parallel-adapter"],
    defaults=_parallel_defaults,
    make_config=lambda info, options: _config(
        info, options, target_list(options["target_modules"]), parallel=True
    ),
    merge_problem=BOTTLENECK_NOT_MERGEABLE,
)
