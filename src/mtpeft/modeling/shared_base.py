"""Several trained runs on ONE frozen base backbone: one copy of the base weights, one peft adapter per run.

`mtpeft.load_many` loads the first run of a group as `mtpeft.load` does and adds each further run's saved
module to the same `peft.PeftModel` with `load_adapter`; every run gets its own `MultiTaskModel` (its own
heads) whose backbone is an `AdapterView`: activate this run's adapter, then run the shared forward.

Which runs share (what peft 0.21 allows, measured in tests/modeling/test_shared_base.py):

- the same base weights: the same `config.model`, and for models built randomly from a config (`tiny-*`)
  the same `config.seed`, since there the seed IS the base weights;
- the same adapter family. peft refuses to mix peft types in one PeftModel ("Cannot combine adapters with
  different peft types"), so LoRA and DoRA (both LORA) share, and IA3, prefix, prompt, serial adapter and
  parallel adapter each share only among themselves. Serial and parallel bottleneck adapters have one peft
  type but are kept apart: a serial adapter added after a parallel one misses its target (the parallel
  wrapper moves the module it wraps) and none of its weights load;
- never `full`: it replaces the base weights themselves.

Anything else loads on its own backbone, exactly as `mtpeft.load` does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import psutil
import torch
from peft.utils import CONFIG_NAME as PEFT_CONFIG_FILE
from torch import nn

from mtpeft.errors import ConfigError
from mtpeft.modeling.build import (
    SavedRun,
    TrainedRun,
    attach_heads,
    load_module,
    load_saved,
    load_trained,
    read_saved,
)
from mtpeft.models.registry import MODELS
from mtpeft.peft_methods import get_method
from mtpeft.peft_methods.base import read_method_record
from mtpeft.peft_methods.peft_backed import PeftAdaptedBackbone, PeftLibraryMethod, _quiet_deprecations

# (model, seed or None, peft type, parallel bottleneck or None, peft task type): runs with equal keys share.
# The task type tells a model loaded with its LM head (CAUSAL_LM) from the bare one (FEATURE_EXTRACTION).
ShareKey = tuple[str, int | None, str, bool | None, str | None]


class MemoryUse(TypedDict):
    """What loading one run added to the process."""

    shared_backbone_with: str | None  # the run directory (name) whose backbone this run reuses
    parameter_bytes_added: int  # this run's own parameters: adapter + heads when sharing, else everything
    rss_bytes_added: int  # resident-memory growth while it loaded (CPU memory; 0 if it shrank)


class LoadedRun(NamedTuple):
    trained: TrainedRun
    memory: MemoryUse


class AdapterView(nn.Module):
    """One run's backbone inside a shared one: activates the run's adapter, then the shared forward.

    Switching the active adapter right before each forward is correct because inference is single-threaded
    per process (a Run answers one call at a time; `mtpeft serve` hands the models to ONE worker thread).
    Two threads encoding through views of one backbone at the same time would race on the active adapter.
    """

    def __init__(self, shared: PeftAdaptedBackbone, adapter_name: str, record: dict[str, Any]) -> None:
        super().__init__()
        self.shared = shared
        self.adapter_name = adapter_name
        # What AdaptedBackbone exposes, for this run's own module (not the first run's).
        self.method: str = record["method"]
        self.options: dict[str, Any] = record["options"]
        self.info = shared.info

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self._activate()
        return self.shared(input_ids, attention_mask)

    # What tasks trained through the LM head call (modeling/lm.py), for this run's adapter.
    def lm_forward(self, **inputs: Any) -> Any:
        self._activate()
        return self.shared.lm_forward(**inputs)

    def generate(self, **kwargs: Any) -> torch.Tensor:
        self._activate()
        return self.shared.generate(**kwargs)

    @property
    def transformer(self) -> nn.Module:
        return self.shared.transformer

    @property
    def is_prompt_learning(self) -> bool:
        return bool(self.shared.base_model.peft_config[self.adapter_name].is_prompt_learning)

    def _activate(self) -> None:
        peft_model = self.shared.base_model
        if peft_model.active_adapter != self.adapter_name:  # set_adapter walks every module: skip if set
            # inference_mode=True: peft would otherwise make the activated adapter trainable again.
            peft_model.set_adapter(self.adapter_name, inference_mode=True)


class SharedBase:
    """The first run's backbone and module, frozen, with a further peft adapter for each run added."""

    def __init__(self, first: SavedRun, device: torch.device) -> None:
        self.owner = first.run_dir
        self.backbone, adapted = load_module(first)
        assert isinstance(adapted, PeftAdaptedBackbone)  # share_key admits peft-backed methods only
        self.adapted = adapted
        # Nothing here trains: freezing it all means no activated adapter is left with requires_grad.
        adapted.requires_grad_(False)
        self.first = self._trained(first, adapted.base_model.active_adapter, device)

    def add(self, run: SavedRun, device: torch.device) -> TrainedRun:
        peft_model = self.adapted.base_model
        name = f"run{len(peft_model.peft_config)}"  # unique; peft names the first adapter "default"
        try:
            with _quiet_deprecations():
                result = peft_model.load_adapter(str(run.adapter_dir), adapter_name=name, is_trainable=False)
        except (ValueError, KeyError, RuntimeError) as err:
            raise self._cannot_share(run, str(err)) from err
        keys = _unplaced_keys(result, is_prompt_learning=peft_model.peft_config[name].is_prompt_learning)
        if keys:  # weights that found no module: the adapter is not what was trained
            raise self._cannot_share(run, f"{len(keys)} weights did not fit, e.g. {keys[0]}")
        self.adapted.requires_grad_(False)  # peft leaves a newly added prompt encoder trainable
        return self._trained(run, name, device)

    def _trained(self, run: SavedRun, adapter_name: str, device: torch.device) -> TrainedRun:
        view = AdapterView(self.adapted, adapter_name, read_method_record(run.adapter_dir))
        model = attach_heads(run, view, self.backbone.info, tokenizer=self.backbone.tokenizer)
        model.to(device).eval()  # moves this run's adapter and heads; the shared weights are there already
        return TrainedRun(model, self.backbone, run.config)

    def _cannot_share(self, run: SavedRun, problem: str) -> ConfigError:
        return ConfigError(
            f"its adapter could not be added to the backbone of run {self.owner.name} ({problem}); "
            "load this run on its own with mtpeft.load()",
            path=run.run_dir,
        )


def _unplaced_keys(result: Any, *, is_prompt_learning: bool) -> list[str]:
    """Saved weights `load_adapter` found no place for (peft itself only warns about missing ones)."""
    # peft loads a prompt-learning adapter's embeddings on their own and still lists them as unexpected.
    unexpected = [k for k in result.unexpected_keys if not (is_prompt_learning and k == "prompt_embeddings")]
    return [*result.missing_keys, *unexpected]


def share_key(saved: SavedRun) -> ShareKey | None:
    """Runs with the same key can share one backbone; None: this run needs its own."""
    if not isinstance(get_method(saved.config.method), PeftLibraryMethod):
        return None  # `full` fine-tunes the base weights themselves
    entry = MODELS.get(saved.config.model)
    # A pretrained model's weights come from its files; the seed only initialises what a checkpoint lacks
    # (e.g. a pooler), which the hidden states the heads read do not use.
    seed = saved.config.seed if entry is not None and entry.random_init is not None else None
    adapter = json.loads((saved.adapter_dir / PEFT_CONFIG_FILE).read_text(encoding="utf-8"))
    parallel, task_type = adapter.get("parallel"), adapter.get("task_type")
    return saved.config.model, seed, str(adapter["peft_type"]), parallel, task_type


def load_one(run_dir: Path, device: torch.device) -> LoadedRun:
    """A run on its own backbone (`mtpeft.load`), with what loading it added."""
    before = _rss()
    trained = load_trained(run_dir, device)
    return LoadedRun(trained, _memory(None, parameter_bytes(trained.model.parameters(), set()), before))


def load_shared(run_dirs: Sequence[Path], device: torch.device) -> list[LoadedRun]:
    """Each run, in order; runs with equal `share_key` on one backbone (see the module docstring)."""
    saved = [read_saved(run_dir) for run_dir in run_dirs]  # every run checked before any model loads
    keys = [share_key(run) for run in saved]
    group_sizes = Counter(key for key in keys if key is not None)
    bases: dict[ShareKey, SharedBase] = {}
    seen: set[int] = set()  # parameters already counted for an earlier run
    loaded: list[LoadedRun] = []
    for run, key in zip(saved, keys, strict=True):
        before = _rss()
        trained, shared_with = _load_in_group(run, key if group_sizes[key] > 1 else None, bases, device)
        added = parameter_bytes(trained.model.parameters(), seen)
        loaded.append(LoadedRun(trained, _memory(shared_with, added, before)))
    return loaded


def _load_in_group(
    run: SavedRun, key: ShareKey | None, bases: dict[ShareKey, SharedBase], device: torch.device
) -> tuple[TrainedRun, str | None]:
    """(the loaded run, the run whose backbone it reuses); a run alone in its group loads as `load` does."""
    if key is None:
        return load_saved(run, device), None
    if key not in bases:
        bases[key] = SharedBase(run, device)
        return bases[key].first, None
    return bases[key].add(run, device), bases[key].owner.name


def parameter_bytes(parameters: Iterable[nn.Parameter], seen: set[int]) -> int:
    """Bytes of the parameters not in `seen` (ids), which records them: tied or shared weights count once."""
    total = 0
    for parameter in parameters:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel() * parameter.element_size()
    return total


def _memory(shared_with: str | None, parameter_bytes_added: int, rss_before: int) -> MemoryUse:
    # The allocator may reuse memory freed earlier, so the delta is a measurement, not an accounting;
    # a negative one (memory returned to the system meanwhile) reads as nothing added.
    return MemoryUse(
        shared_backbone_with=shared_with,
        parameter_bytes_added=parameter_bytes_added,
        rss_bytes_added=max(0, _rss() - rss_before),
    )


def _rss() -> int:
    return psutil.Process().memory_info().rss
