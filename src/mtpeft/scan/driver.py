"""``scan_tree``: extract, ask the analyzer in batches, find clones; everything `mtpeft scan` needs.

Batching: units are grouped by the set of tasks that apply to them (analyzer.default_applies_to:
functions and methods get vulnerability/complexity-like tasks, tests get flaky-like tasks), sorted
by length inside each group so batches pad little, and each batch is ONE ``analyze`` call that
answers every applicable task at once.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from mtpeft.scan.analyzer import PER_UNIT_KINDS, Analyzer, Answer, TaskSpec, as_answer
from mtpeft.scan.clones import CloneOptions, clone_task, find_clones
from mtpeft.scan.extract import DEFAULT_MAX_ERROR_RATIO, DEFAULT_MAX_FILE_BYTES, ExtractOptions, extract_tree
from mtpeft.scan.result import ScanResult
from mtpeft.scan.units import CodeUnit

Progress = Callable[[str, int], None]


def scan_tree(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    analyzer: Analyzer,
    *,
    tasks: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    use_default_excludes: bool = True,
    languages: Collection[str] | None = None,
    max_tokens: int | None = None,
    batch_size: int = 32,
    clones: bool | CloneOptions = True,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_error_ratio: float = DEFAULT_MAX_ERROR_RATIO,
    progress: bool = True,
) -> ScanResult:
    """Scan ``root`` (a directory, one file, or a list of both: see mtpeft.scan.extract) with ``analyzer``.

    ``tasks``: names from ``analyzer.tasks`` (None: all of them). Clone search runs when ``tasks`` is
    None or names a pair task, unless ``clones=False``; a CloneOptions tunes it. Without a pair task
    in the run, it reports exact duplicates only (and says so in ``notes``).
    ``max_tokens``: the model's per-unit limit for every task (None: each task's own limit from training,
    passed on as None); longer units are truncated by the analyzer and counted in ``ScanResult.truncated``
    against ``max_tokens`` or ``analyzer.max_tokens``. Raises ValueError for an unknown task or language,
    never for a bad file (those are in ``ScanResult.skipped``).
    """
    started = time.perf_counter()
    selected = _select_tasks(analyzer, tasks)
    limit = int(max_tokens or analyzer.max_tokens)
    asked = int(max_tokens) if max_tokens else None  # what the model is told: None keeps its own limits
    options = ExtractOptions(
        exclude=exclude,
        use_default_excludes=use_default_excludes,
        max_file_bytes=max_file_bytes,
        max_error_ratio=max_error_ratio,
        languages=languages,
    )
    extraction = extract_tree(root, options, progress=progress)
    result = ScanResult(
        root=extraction.root,
        units=extraction.units,
        answers=[{} for _ in extraction.units],
        tasks={t.name: t for t in selected},
        skipped=extraction.skipped,
        max_tokens=limit,
        files=extraction.files,
        info={str(k): str(v) for k, v in analyzer.info.items()},
    )
    result.timings["extract"] = extraction.seconds
    with _timed(result, "tokens"):
        result.truncated = _over_limit(analyzer, result.units, limit, batch_size)
    groups = applicable_groups(result.units, [t for t in selected if t.kind in PER_UNIT_KINDS])
    with _timed(result, "analyze"), _bar(progress, "analyzing", sum(map(len, groups.values()))) as tick:
        _analyze(analyzer, result, groups, batch_size, tick, asked)
    if clones is not False and (tasks is None or any(t.kind == "pair" for t in selected)):
        with _timed(result, "clones"), _bar(progress, "clones", None) as tick:
            _clones(
                analyzer,
                result,
                selected,
                clones if isinstance(clones, CloneOptions) else CloneOptions(),
                tick,
                asked,
            )
    result.timings["total"] = time.perf_counter() - started
    return result


def _select_tasks(analyzer: Analyzer, names: Sequence[str] | None) -> list[TaskSpec]:
    known = dict(analyzer.tasks)
    if names is None:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; this run has {list(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def _over_limit(analyzer: Analyzer, units: list[CodeUnit], limit: int, batch_size: int) -> list[int]:
    over: list[int] = []
    step = max(batch_size, 256)  # tokenizers are fast; larger batches cost nothing
    for start in range(0, len(units), step):
        counts = analyzer.count_tokens([u.code for u in units[start : start + step]])
        over.extend(start + i for i, n in enumerate(counts) if n > limit)
    return over


def applicable_groups(
    units: Sequence[CodeUnit], tasks: Sequence[TaskSpec]
) -> dict[tuple[str, ...], list[int]]:
    """Unit indices grouped by the tuple of task names that apply to them (units with none left out)."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, unit in enumerate(units):
        names = tuple(t.name for t in tasks if unit.kind in t.unit_kinds)
        if names:
            groups[names].append(index)
    return dict(groups)


def _analyze(
    analyzer: Analyzer,
    result: ScanResult,
    groups: dict[tuple[str, ...], list[int]],
    batch_size: int,
    tick: Progress,
    max_tokens: int | None,
) -> None:
    for names, indices in groups.items():
        indices = sorted(indices, key=lambda i: len(result.units[i].code))
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            codes = [result.units[i].code for i in batch]
            answers = analyzer.analyze(codes, list(names), max_tokens=max_tokens)
            for i, answer in zip(batch, _checked(answers, len(batch), names, result.tasks), strict=True):
                result.answers[i] = answer
            for i, raw in zip(batch, answers, strict=True):
                ood = _unfamiliar_score(raw[names[0]])
                if ood is not None:
                    result.unfamiliar[i] = ood
            tick("analyze", len(batch))


def _unfamiliar_score(answer: object) -> float | None:
    """The OOD score of an answer its analyzer marked unfamiliar (mtpeft.api.Prediction), else None."""
    if isinstance(answer, Mapping) and answer.get("unfamiliar") is True:
        return float(answer["ood_score"])
    return None


def _checked(
    answers: Sequence[Mapping[str, Any]], expected: int, names: tuple[str, ...], tasks: dict[str, TaskSpec]
) -> Iterator[dict[str, Answer]]:
    # A wrong answer is a bug in the analyzer: say exactly what came back rather than report nonsense.
    if len(answers) != expected:
        raise ValueError(f"analyzer.analyze returned {len(answers)} answers for {expected} snippets")
    for answer in answers:
        missing = [n for n in names if n not in answer]
        if missing:
            raise ValueError(f"analyzer.analyze left out task(s) {missing} in an answer")
        yield {n: _valid(as_answer(answer[n]), tasks[n]) for n in names}


def _valid(answer: Answer, task: TaskSpec) -> Answer:
    if task.labels and answer.label not in task.labels:
        labels = list(task.labels)
        raise ValueError(
            f"analyzer answered label {answer.label!r} for task {task.name!r}, not one of {labels}"
        )
    if not 0.0 <= answer.probability <= 1.0:
        raise ValueError(
            f"analyzer answered probability {answer.probability} for task {task.name!r}, not in [0, 1]"
        )
    return answer


def _clones(
    analyzer: Analyzer,
    result: ScanResult,
    selected: list[TaskSpec],
    options: CloneOptions,
    tick: Progress,
    max_tokens: int | None,
) -> None:
    task = clone_task(analyzer, [t.name for t in selected])
    search = find_clones(result.units, analyzer, task, options, max_tokens=max_tokens, on_batch=tick)
    result.clone_pairs = search.pairs
    result.clone_task = task.name if task is not None else None
    if search.note:
        result.notes.append(search.note)


@contextmanager
def _timed(result: ScanResult, phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        result.timings[phase] = time.perf_counter() - start


@contextmanager
def _bar(enabled: bool, desc: str, total: int | None) -> Iterator[Progress]:
    """A tqdm bar on stderr (nothing when disabled); the callback advances it."""
    if not enabled:
        yield lambda _phase, _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=" units", leave=False) as bar:

        def tick(phase: str, n: int) -> None:
            bar.set_postfix_str(phase, refresh=False)
            bar.update(n)

        yield tick
