"""Merge trained LoRA runs into one run directory: one module from peft's `add_weighted_adapter`, every
source run's heads beside it.

The merged run is written like a trained one (config.yaml, run.json, best/ through the trainer's own
writer, with its manifest), so `mtpeft evaluate`, `mtpeft.load`, `scan`, `serve`, `calibrate` and the
report use it as they use any run. run.json and the store row add what a trained run does not have: the
source runs (ids, directories, the sha256 of each best/MANIFEST.json) and the merge settings. Its cost is
the merge itself: no training step, so no training FLOPs beyond those of its source runs (which the cost
also sums, as `sources_*`).

Calibration is not carried: each source's temperatures were fitted to its own module's logits, and the
merged module changes them. The merged run is uncalibrated until `mtpeft calibrate OUT` fits it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import PeftModel

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.errors import InputError
from mtpeft.manifest import MANIFEST_FILE
from mtpeft.merging.settings import MergeSettings
from mtpeft.merging.sources import MergeRefused, Source, check_sources, read_sources
from mtpeft.modeling.build import attach_heads, head_options, save_deployable
from mtpeft.modeling.model import MultiTaskModel
from mtpeft.modeling.shared_base import _unplaced_keys
from mtpeft.models import load_backbone
from mtpeft.models.loading import Backbone
from mtpeft.peft_methods.peft_backed import PeftAdaptedBackbone, _quiet_deprecations
from mtpeft.store import RunStore, config_hash
from mtpeft.store.sqlite import MERGED as MERGED_MODE

MERGED_ADAPTER = "default"  # peft saves its "default" adapter at the folder's top level, where loads look
UNCALIBRATED_NOTE = (
    "the merged run is uncalibrated (its sources' temperatures were fitted to their own modules); "
    "fit its own with: mtpeft calibrate {out}"
)


@dataclass
class MergeResult:
    run_dir: Path
    run_id: str
    tasks: list[str]
    metrics: dict[str, dict[str, dict[str, float]]]  # {split: {task: {metric: value}}}; {} unevaluated
    baselines: dict[str, dict[str, dict[str, float]]]
    store: Path | None  # where it was recorded; None: --out is not in a workspace's runs/ folder
    notes: list[str]


def merge_runs(
    run_dirs: list[Path],
    settings: MergeSettings,
    out: Path,
    *,
    evaluate: bool = True,
    progress: bool = False,
    study: str | None = None,
    key: str | None = None,
    name: str | None = None,
) -> MergeResult:
    """Merge the runs into the new run directory `out`, record it, and score it on its splits.

    `study`: the store's study of the merged run (default: the sources' study when they share one);
    `key`: its run key in the store (default: from the sources' best/ checksums and the settings);
    `name`: its name in the store (default: the folder's).
    """
    out = Path(out)
    _check_out(out)
    sources = read_sources(run_dirs)
    check_sources(sources, settings)
    weights = _weights(settings, len(sources))
    started = time.perf_counter()
    model, backbone = build_merged(sources, settings, weights)
    config = merged_config(sources, model, out, study=study if study is not None else _shared_study(sources))
    config = config.model_copy(update={"name": name or out.name})
    record = merge_record(sources, settings)
    key = key or config_hash({"merge": record})
    store = _store_of(out)
    run_id = _start_row(store, config, key, record, out)
    try:
        _write_run_dir(out, config, model, run_id, record)
        merge_seconds = time.perf_counter() - started
        metrics, baselines = _evaluate(out, config, progress) if evaluate else ({}, {})
        cost = merge_cost(sources, model, backbone, out, merge_seconds)
        (out / layout.COST_FILE).write_text(json.dumps(cost, indent=2), encoding="utf-8")
        if store is not None:
            store.finish_run(
                run_id, metrics=metrics, cost=cost, baselines=baselines, details={"merge": record}
            )
    except KeyboardInterrupt:
        if store is not None:
            store.interrupt_run(run_id, "stopped by the user (KeyboardInterrupt)")
        raise
    except BaseException as err:
        if store is not None:
            store.fail_run(run_id, f"{type(err).__name__}: {err}")
        raise
    notes = [UNCALIBRATED_NOTE.format(out=out)]
    if store is None:
        notes.append(
            f"not recorded in a store: {out} is not in a workspace's runs/ folder (WORKSPACE/runs/NAME), "
            "where evaluate and report look; the run directory works everywhere else"
        )
    return MergeResult(
        out, run_id, list(model.tasks), metrics, baselines, store.path if store else None, notes
    )


def _check_out(out: Path) -> None:
    if out.exists():
        raise InputError(
            f"--out {out} exists; the merged run needs a new folder (remove it or choose another)"
        )


def _weights(settings: MergeSettings, n_runs: int) -> list[float]:
    try:
        return settings.weights_for(n_runs)
    except ValueError as err:
        raise InputError(f"--weights: {err}") from None


def _shared_study(sources: list[Source]) -> str | None:
    studies = {s.saved.config.study for s in sources}
    return studies.pop() if len(studies) == 1 else None


# ---- the merged model -------------------------------------------------------------------------------
def build_merged(
    sources: list[Source], settings: MergeSettings, weights: list[float]
) -> tuple[MultiTaskModel, Backbone]:
    """The merged module on a fresh backbone of the sources' base, with every source's heads."""
    first = sources[0].saved
    lm_head = any(s.saved.meta.get("lm_tasks") for s in sources)
    backbone = load_backbone(first.config.model, seed=first.config.seed, lm_head=lm_head)
    peft_model = _load_adapters(backbone, sources)
    names = [f"run{i}" for i in range(len(sources))]
    try:
        # DARE drops entries at random (torch's global generator): seeded by the run's seed, so merging
        # the same runs again gives the same module, and the caller's random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(first.config.seed)
            peft_model.add_weighted_adapter(
                names, weights, MERGED_ADAPTER, combination_type=settings.method, density=settings.density
            )
    except ValueError as err:  # what the checks before did not foresee: peft's own words
        raise MergeRefused(f"peft could not merge the runs ({err})") from err
    peft_model.set_adapter(MERGED_ADAPTER)
    for name in names:
        peft_model.delete_adapter(name)
    peft_model.requires_grad_(False)
    adapted = PeftAdaptedBackbone(
        peft_model, method=first.config.method, options=_merged_options(peft_model), info=backbone.info
    )
    return _with_heads(sources, adapted, backbone), backbone


def _load_adapters(backbone: Backbone, sources: list[Source]) -> PeftModel:
    """Every source's module as its own adapter (run0, run1, ...) of one PeftModel."""
    with _quiet_deprecations():
        peft_model = PeftModel.from_pretrained(
            backbone.model, str(sources[0].saved.adapter_dir), adapter_name="run0", is_trainable=False
        )
        for i, source in enumerate(sources[1:], start=1):
            result = peft_model.load_adapter(str(source.saved.adapter_dir), adapter_name=f"run{i}")
            unplaced = _unplaced_keys(result, is_prompt_learning=False)
            if unplaced:  # weights with no module to go to: the merge would silently drop them
                raise MergeRefused(
                    f"run {source.name}'s module does not fit the base of run {sources[0].name} "
                    f"({len(unplaced)} weights found no place, e.g. {unplaced[0]}); merge runs of one base"
                )
    return peft_model


def _merged_options(peft_model: PeftModel) -> dict[str, Any]:
    """The merged LoRA's options, as `mtpeft_method.json` and the config record them (peft sets
    alpha = r for a merged adapter: the weights already carry each source's scaling)."""
    config = peft_model.peft_config[MERGED_ADAPTER]
    targets = config.target_modules
    return {
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
    }


def _with_heads(sources: list[Source], adapted: PeftAdaptedBackbone, backbone: Backbone) -> MultiTaskModel:
    """One MultiTaskModel over the merged module whose heads are the sources' trained ones.

    Each source's heads load through `attach_heads`, the loader every run uses (format, inputs and
    shapes checked there); their weights are then copied into the merged model's heads of the same name.
    """
    per_source = [
        attach_heads(s.saved, adapted, backbone.info, tokenizer=backbone.tokenizer) for s in sources
    ]
    tasks = {name: spec for model in per_source for name, spec in model.tasks.items()}
    lm_tasks = {name: entry for model in per_source for name, entry in model.lm_tasks.items()}
    first = sources[0].saved
    merged = MultiTaskModel(
        adapted,
        tasks,
        hidden_size=backbone.info.hidden_size,
        pooling=first.meta["pooling"],
        head_options=head_options(first.config),
        lm_tasks=lm_tasks,
        tokenizer=backbone.tokenizer,
    )
    for model in per_source:
        for name, head in model.heads.items():
            merged.heads[name].load_state_dict(head.state_dict())
    return merged.eval()


# ---- the run directory --------------------------------------------------------------------------------
def merged_config(
    sources: list[Source], model: MultiTaskModel, out: Path, *, study: str | None
) -> TrainConfig:
    """The first source's settings with every source's task entries, the merged module's options, and the
    workspace --out sits in (the sources' when it is in none)."""
    first = sources[0].saved.config
    entries = [
        next(entry for entry in s.saved.config.tasks if entry.label == task)
        for s in sources
        for task in s.tasks
    ]
    splits = list(dict.fromkeys(split for s in sources for split in s.saved.config.evaluate_splits))
    workspace = _workspace_of(out) or Path(first.workspace)
    adapted = model.backbone
    assert isinstance(adapted, PeftAdaptedBackbone)
    return first.model_copy(
        update={
            "name": out.name,
            "mode": "multi",
            "tasks": entries,
            "method_options": adapted.options,
            "workspace": str(workspace.resolve()),
            "study": study,
            "evaluate_splits": splits,
            "baselines": all(s.saved.config.baselines for s in sources),
        }
    )


def _workspace_of(out: Path) -> Path | None:
    """WORKSPACE for an --out of WORKSPACE/runs/NAME (where evaluate and report look for the store)."""
    resolved = out.resolve()
    return resolved.parent.parent if resolved.parent.name == layout.RUNS_DIR else None


def merge_record(sources: list[Source], settings: MergeSettings) -> dict[str, Any]:
    """The sources and settings, as run.json, the store's config and its details keep them."""
    return settings.record(len(sources)) | {"sources": [s.record() for s in sources]}


def _write_run_dir(
    out: Path, config: TrainConfig, model: MultiTaskModel, run_id: str, record: dict[str, Any]
) -> None:
    """config.yaml, run.json and best/ into a scratch folder, renamed to `out` once complete."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        (tmp / layout.CONFIG_FILE).write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        run_file = {"run_id": run_id, "group_id": None, "merge": record}
        (tmp / layout.RUN_FILE).write_text(json.dumps(run_file, indent=2), encoding="utf-8")
        save_deployable(model, tmp / layout.BEST_DIR, step=0, score=None)  # the trainer's own writer
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out)


# ---- the store -------------------------------------------------------------------------------------------
def _store_of(out: Path) -> RunStore | None:
    workspace = _workspace_of(out)
    return RunStore(layout.store_path(workspace)) if workspace is not None else None


def _start_row(
    store: RunStore | None, config: TrainConfig, key: str, record: dict[str, Any], out: Path
) -> str:
    if store is None:
        import uuid

        return uuid.uuid4().hex
    return store.start_run(
        name=config.name,
        study=config.study,
        group_id=None,
        mode=MERGED_MODE,
        model=config.model,
        method=config.method,
        tasks=[t.label for t in config.tasks],
        seed=config.seed,
        config=config.hashable() | {"key": key, "merge": record},
        run_dir=str(out.resolve()),
    )


def _evaluate(out: Path, config: TrainConfig, progress: bool) -> tuple[dict, dict]:
    """Each of the run's evaluate_splits scored as training scores them (prediction files included)."""
    from mtpeft.evaluation.run_eval import evaluate_run

    metrics: dict[str, dict[str, dict[str, float]]] = {}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    for split in config.evaluate_splits:
        metrics[split], split_baselines = evaluate_run(
            out, split, baselines=config.baselines, progress=progress
        )
        baselines = baselines or split_baselines
    return metrics, baselines


SOURCE_COST_KEYS = ("train_flops_estimate", "wall_time_s", "tokens")


def merge_cost(
    sources: list[Source], model: MultiTaskModel, backbone: Backbone, out: Path, merge_seconds: float
) -> dict[str, Any]:
    """What making the merged run cost: no training (FLOPs, tokens and samples 0), the merge's own wall
    time, and what the merged run stores; the sources' own training cost beside it, summed."""
    best = out / layout.BEST_DIR
    stored = sum(f.stat().st_size for f in best.rglob("*") if f.is_file() and f.name != MANIFEST_FILE)
    module = sum(p.numel() for name, p in model.backbone.named_parameters() if "lora_" in name)
    full = sum(p.numel() * p.element_size() for p in backbone.model.parameters())
    backbone_params = sources[0].cost.get("backbone_params") or 0
    cost: dict[str, Any] = {
        "trainable_params": 0,
        "shared_params": module,
        "head_params": model.head_parameter_count(),
        "backbone_params": backbone_params,
        "trainable_pct": 0.0,
        "stored_bytes": stored,
        "full_model_bytes": full,
        "tokens": 0,
        "padded_tokens": 0,
        "samples": 0,
        "train_flops_estimate": 0.0,
        "wall_time_s": merge_seconds,
        "merge_wall_time_s": merge_seconds,
    }
    for key in SOURCE_COST_KEYS:
        values = [s.cost.get(key) for s in sources]
        cost[f"sources_{key}"] = None if None in values else float(sum(values))
    return cost
