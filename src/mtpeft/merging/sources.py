"""The runs a merge reads, each checked (best/ against its manifest), and every reason they cannot be
merged, refused before any model loads with a message naming the run and what to do."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft.utils import CONFIG_NAME as PEFT_CONFIG_FILE

from mtpeft import layout
from mtpeft.errors import MtpeftError
from mtpeft.manifest import MANIFEST_FILE
from mtpeft.merging.settings import MergeSettings, combination
from mtpeft.modeling.build import SavedRun, read_saved
from mtpeft.modeling.shared_base import ShareKey, share_key
from mtpeft.peft_methods import get_method
from mtpeft.peft_methods.peft_backed import NOT_MERGEABLE


class MergeRefused(MtpeftError):
    """These runs cannot be merged (the message names the run, the reason and what to do)."""


@dataclass(frozen=True)
class Source:
    """One run to merge: checked, with what the merge and its record need."""

    saved: SavedRun  # config (absolute paths), heads.json; best/ verified against its manifest
    run_id: str | None  # run.json's; None for a run directory copied without it
    manifest_sha256: str  # sha256 of best/MANIFEST.json: names every file of best/ by its checksum
    adapter: dict[str, Any]  # best/adapter/adapter_config.json (peft's)
    cost: dict[str, Any]  # cost.json: what training it cost ({} where the run has none)

    @property
    def run_dir(self) -> Path:
        return self.saved.run_dir

    @property
    def name(self) -> str:
        return self.saved.run_dir.name

    @property
    def tasks(self) -> list[str]:
        return list(self.saved.meta["tasks"])

    @property
    def rank(self) -> int | None:
        return self.adapter.get("r")

    def record(self) -> dict[str, Any]:
        """What the merged run's run.json and store row keep of this source."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir.resolve()),
            "best_manifest_sha256": self.manifest_sha256,
            "tasks": self.tasks,
        }


def read_sources(run_dirs: list[Path]) -> list[Source]:
    """Every run checked before anything loads (a damaged best/ is named by read_saved)."""
    if len(run_dirs) < 2:
        raise MergeRefused("merging needs at least two run directories (workspace/runs/<run>)")
    resolved = [Path(r).resolve() for r in run_dirs]
    twice = sorted({str(r) for r in resolved if resolved.count(r) > 1})
    if twice:
        raise MergeRefused(f"run {twice[0]} is given twice; give each run once (weights scale a run)")
    for run_dir in run_dirs:
        if not Path(run_dir).is_dir():
            raise MergeRefused(f"{run_dir}: no such run directory (expected workspace/runs/<run>)")
    return [_read(Path(run_dir)) for run_dir in run_dirs]


def _read(run_dir: Path) -> Source:
    saved = read_saved(run_dir, calibrated=False)  # a merge carries no calibration (see merge.py)
    run_file = layout.read_run_file(run_dir)
    adapter_file = saved.adapter_dir / PEFT_CONFIG_FILE
    adapter = _json_object(adapter_file)
    cost = _json_object(run_dir / layout.COST_FILE)
    manifest = saved.best / MANIFEST_FILE
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else ""
    return Source(saved, run_file["run_id"] if run_file else None, digest, adapter, cost)


def check_sources(sources: list[Source], settings: MergeSettings) -> None:
    """Refuse what peft cannot merge or what would load as a different model than the runs trained."""
    for check in CHECKS:
        check(sources, settings)


def _methods(sources: list[Source], settings: MergeSettings) -> None:
    for source in sources:
        method = source.saved.config.method
        problem = getattr(get_method(method), "merge_problem", NOT_MERGEABLE)
        if problem:
            raise MergeRefused(
                f"run {source.name} was trained with method {method}, which cannot be merged: {problem}. "
                "Merge runs trained with method lora (e.g. `mtpeft train CONFIG --mode single --method "
                "lora`), or train one multi-task run of these tasks instead"
            )


def _base_of(key: ShareKey | None) -> str:
    assert key is not None  # _methods let only peft-backed methods through
    model, seed = key[0], key[1]
    return model if seed is None else f"{model} with seed {seed} (its random base weights)"


def _same_base(sources: list[Source], settings: MergeSettings) -> None:
    first, first_key = sources[0], share_key(sources[0].saved)
    for source in sources[1:]:
        key = share_key(source.saved)
        if key is None or first_key is None or key[:2] != first_key[:2]:
            raise MergeRefused(
                f"run {source.name} was trained on {_base_of(key)}, run {first.name} on "
                f"{_base_of(first_key)}: modules of different base models do not add up. Merge runs of "
                "one base model (and, for the random tiny-* models, one seed)"
            )
        if key[4] != first_key[4]:
            lm = {s.name: bool(s.saved.meta.get("lm_tasks")) for s in (first, source)}
            with_lm = next(name for name, has in lm.items() if has)
            without = next(name for name, has in lm.items() if not has)
            raise MergeRefused(
                f"run {with_lm} trains tasks through the LM head (formulation instruct or generation) and "
                f"run {without} does not, so their modules wrap different model classes ({key[4]} vs "
                f"{first_key[4]}) and their weights do not line up. Merge runs that both train through the "
                "LM head, or both through heads only"
            )


def _ranks(sources: list[Source], settings: MergeSettings) -> None:
    ranks = {s.name: s.rank for s in sources}
    if combination(settings.method).equal_ranks and len(set(ranks.values())) > 1:
        listed = ", ".join(f"{name} r={rank}" for name, rank in ranks.items())
        raise MergeRefused(
            f"merge method {settings.method} needs one LoRA rank, but the runs have {listed}. Use "
            "--method cat (its rank is the sum of the runs' ranks), or merge runs trained at one rank"
        )


def _unique_tasks(sources: list[Source], settings: MergeSettings) -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for source in sources:
        for task in source.tasks:
            owners[task].append(source.name)
    for task, runs in owners.items():
        if len(runs) > 1:
            raise MergeRefused(
                f"task {task!r} is in runs {' and '.join(runs)}: a merged run keeps one head per task "
                "name. Merge only one of those runs, or train one of them with the task renamed (its "
                "config's task entry `name: <new name>`, e.g. `--set tasks.0.name=" + task + "-b`)"
            )


def _same_heads(sources: list[Source], settings: MergeSettings) -> None:
    """One pooling for every head, one retrieval head shape: the merged run has one of each."""
    first = sources[0]
    for source in sources[1:]:
        theirs, ours = source.saved.meta["pooling"], first.saved.meta["pooling"]
        if theirs != ours:
            raise MergeRefused(
                f"run {source.name}'s heads read {theirs}-pooled vectors and run {first.name}'s "
                f"{ours}-pooled ones; a merged run pools one way. Merge runs trained with one pooling"
            )
    retrieval = [
        s for s in sources if any(t.get("kind") == "retrieval" for t in s.saved.meta["tasks"].values())
    ]
    for field in ("retrieval_dim", "retrieval_scale"):
        values = {s.name: getattr(s.saved.config, field) for s in retrieval}
        if len(set(values.values())) > 1:
            listed = ", ".join(f"{name} {value}" for name, value in values.items())
            raise MergeRefused(
                f"the runs' retrieval heads differ in {field} ({listed}); a merged run has one. Merge "
                "runs trained with one value"
            )


# Registry of checks, in the order their messages are most useful: the method first, then the base.
CHECKS = (_methods, _same_base, _ranks, _unique_tasks, _same_heads)


def _json_object(path: Path) -> dict:
    """A run file's JSON object ({} when absent); a damaged one is refused, naming it."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON and UTF-8 errors
        raise MergeRefused(f"{path} is unreadable ({err}); train that run again, or leave it out") from None
    if not isinstance(value, dict):
        raise MergeRefused(f"{path} is not a JSON object; train that run again, or leave it out")
    return value
