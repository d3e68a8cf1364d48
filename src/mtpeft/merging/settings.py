"""How runs are merged: peft's combination types by name, and one merge's settings (torch-free, so a
study file and `mtpeft merge --help` are checked without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class Combination:
    """One of peft's `add_weighted_adapter` combination types, as `mtpeft merge --method` offers it."""

    name: str
    description: str
    needs_density: bool  # prunes (keeps a `density` share of each module's entries)
    equal_ranks: bool  # peft needs every module at one LoRA rank (cat sums the ranks instead)


# Registry: --method name -> what peft does (peft 0.21, LoraModel.add_weighted_adapter). Every one but
# cat weights lora_A and lora_B apart (each by sqrt(weight x scaling)), so the merged update is
# (sum of weighted B) x (sum of weighted A): cross terms included, not the sum of the runs' updates.
COMBINATIONS: dict[str, Combination] = {
    c.name: c
    for c in (
        Combination(
            "linear",
            "weighted sum of the modules' A and B matrices (task arithmetic on LoRA factors)",
            needs_density=False,
            equal_ranks=True,
        ),
        Combination(
            "cat",
            "the modules side by side (rank = sum of ranks): exactly the weighted sum of their updates",
            needs_density=False,
            equal_ranks=False,
        ),
        Combination(
            "ties",
            "TIES: keep each module's largest entries (density), elect a sign per entry, average agreeing",
            needs_density=True,
            equal_ranks=True,
        ),
        Combination(
            "dare_ties",
            "DARE then TIES: drop entries at random (keep density, rescaled), then sign election",
            needs_density=True,
            equal_ranks=True,
        ),
        Combination(
            "dare_linear",
            "DARE then a weighted sum: drop entries at random (keep density, rescaled)",
            needs_density=True,
            equal_ranks=True,
        ),
        Combination(
            "magnitude_prune",
            "keep each module's largest entries (density), then a weighted sum",
            needs_density=True,
            equal_ranks=True,
        ),
    )
}


def combination(name: str) -> Combination:
    if name not in COMBINATIONS:
        raise ValueError(f"unknown merge method {name!r}; choose one of: {', '.join(COMBINATIONS)}")
    return COMBINATIONS[name]


class MergeSettings(BaseModel):
    """One merge: the combination, a weight per source run (None: 1 each), and the density it prunes to."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: str = Field(description=f"How modules combine: {', '.join(COMBINATIONS)}.")
    weights: list[float] | None = Field(
        default=None, description="One weight per source run, in order; default 1 each."
    )
    density: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of each module's entries kept (ties, dare_ties, dare_linear, magnitude_prune).",
    )

    @model_validator(mode="after")
    def _density_where_needed(self) -> MergeSettings:
        chosen = combination(self.method)
        if chosen.needs_density and self.density is None:
            raise ValueError(
                f"merge method {self.method} prunes each module first: give density (0 < D <= 1, the share "
                "of entries kept; the TIES paper keeps 0.2)"
            )
        if not chosen.needs_density and self.density is not None:
            raise ValueError(f"merge method {self.method} keeps every entry: leave density out")
        return self

    def weights_for(self, n_runs: int) -> list[float]:
        """One weight per source run (1 each by default); ValueError when the count differs."""
        if self.weights is None:
            return [1.0] * n_runs
        if len(self.weights) != n_runs:
            raise ValueError(
                f"{len(self.weights)} weights given for {n_runs} runs: give one per run, in order"
            )
        return [float(w) for w in self.weights]

    def record(self, n_runs: int) -> dict[str, Any]:
        """What run.json and the store keep of the merge."""
        return {"method": self.method, "weights": self.weights_for(n_runs), "density": self.density}
