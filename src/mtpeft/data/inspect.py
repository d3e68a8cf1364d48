"""Dataset quality report for one task: counts, label balance, lengths, duplicates, leakage, conflicts.

Dataset quality decides whether co-training helps, so this report is stored beside every run and goes
into the study reports. Duplicate, leakage and conflict checks are hand-written (a few dict look-ups on a
normalised key); no library we depend on does them for our Example records.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtpeft.data.example import Example
from mtpeft.data.formats.base import load_split, require_splits
from mtpeft.data.formats.textio import listing_cache
from mtpeft.errors import ModelLoadError
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskKind, TaskSpec

# Canonical split order; leakage is reported from an earlier split into a later one (train -> test).
SPLIT_ORDER = ("train", "valid", "test")
PERCENTILES = (50, 90, 95, 99)
MAX_EXAMPLES = 3  # example ids kept per finding: enough to find them, short enough to print
REGEX_TOKENIZER = "regex"

_CODE_TOKEN = re.compile(r"\w+|[^\w\s]")


def regex_tokens(text: str) -> list[str]:
    """Code tokens without a model: identifiers/numbers, or one symbol each."""
    return _CODE_TOKEN.findall(text)


def normalise_code(text: str) -> str:
    """Whitespace-insensitive key: `f(a,b)` and `f( a , b )` give the same key."""
    return " ".join(regex_tokens(text))


# ---------------------------------------------------------------------------------------------------
# Report records


@dataclass
class Finding:
    """How many examples are affected, and a few id groups a user can look up."""

    count: int = 0
    examples: list[list[str]] = field(default_factory=list)


@dataclass
class LengthStats:
    p50: float
    p90: float
    p95: float
    p99: float
    max: int
    mean: float


@dataclass
class SplitReport:
    split: str
    count: int
    empty: int
    labels: dict[str, int] | None  # label name -> count (classification kinds only)
    positive_rate: float | None  # share of the second label (binary and pair)
    lengths: LengthStats  # model input: code, or code + code_b for pairs
    side_lengths: LengthStats | None  # query (retrieval) or target (generation)
    exact_duplicates: Finding
    near_duplicates: Finding  # same code up to whitespace, not byte-identical

    @property
    def duplicate_rate(self) -> float:
        if not self.count:
            return 0.0
        return (self.exact_duplicates.count + self.near_duplicates.count) / self.count


@dataclass
class InspectReport:
    task: str
    kind: str
    root: str
    tokenizer: str
    splits: dict[str, SplitReport]
    leakage: dict[str, Finding]  # "train->test": examples of the later split whose code is in the earlier
    conflicts: Finding | None  # same code with two labels (classification kinds only)

    @property
    def leakage_count(self) -> int:
        return sum(f.count for f in self.leakage.values())

    def to_dict(self) -> dict:
        data = asdict(self)
        for name, split in self.splits.items():
            data["splits"][name]["duplicate_rate"] = round(split.duplicate_rate, 4)
        data["leakage_count"] = self.leakage_count
        return data

    def summary(self) -> dict:
        """Headline numbers only, for run records and report tables."""
        splits = {}
        for name, s in self.splits.items():
            row: dict = {"count": s.count}
            if s.positive_rate is not None:
                row["positive_rate"] = round(s.positive_rate, 4)
            elif s.labels is not None:
                row["labels"] = s.labels
            row["duplicate_rate"] = round(s.duplicate_rate, 4)
            row["p50_len"] = s.lengths.p50
            row["p95_len"] = s.lengths.p95
            splits[name] = row
        return {
            "task": self.task,
            "tokenizer": self.tokenizer,
            "splits": splits,
            "leakage": self.leakage_count,
            "conflicts": self.conflicts.count if self.conflicts is not None else None,
        }


# ---------------------------------------------------------------------------------------------------
# Token counting


TokenCounter = Callable[[Sequence[str]], list[int]]


def _regex_counter(texts: Sequence[str]) -> list[int]:
    return [len(regex_tokens(t)) for t in texts]


def _resolve_tokenizer_path(name: str) -> str:
    try:  # model short names (minilm, ...) live in the model registry, when that module is present
        from mtpeft.models.registry import resolve_tokenizer_path
    except ImportError:
        return name
    return resolve_tokenizer_path(name)


def make_token_counter(tokenizer: str | None) -> tuple[str, TokenCounter]:
    """(description of the tokenizer, counter); None means the regex code-token count."""
    if tokenizer is None or tokenizer == REGEX_TOKENIZER:
        return "regex code tokens (\\w+ or one symbol)", _regex_counter
    path = _resolve_tokenizer_path(tokenizer)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load tokenizer '{tokenizer}' ({path}): {str(err).splitlines()[0]}; "
            "give a local tokenizer folder, a registered model name, or leave --tokenizer out"
        ) from err

    def count(texts: Sequence[str]) -> list[int]:
        ids = tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    return f"{tokenizer} ({type(tok).__name__})", count


def _length_stats(lengths: Sequence[int]) -> LengthStats:
    if not lengths:
        return LengthStats(0, 0, 0, 0, 0, 0)
    arr = np.asarray(lengths)
    p50, p90, p95, p99 = (round(float(v), 1) for v in np.percentile(arr, PERCENTILES))
    return LengthStats(p50, p90, p95, p99, int(arr.max()), round(float(arr.mean()), 1))


# ---------------------------------------------------------------------------------------------------
# Keys: what counts as "the same code" for each task kind


def code_key(ex: Example, kind: str, normalise: Callable[[str], str]) -> str:
    """Pairs are unordered (a, b); every other kind is keyed on its code."""
    if kind == TaskKind.PAIR:
        a, b = sorted((normalise(ex.code), normalise(ex.code_b or "")))
        return f"{a}\x00{b}"
    return normalise(ex.code)


def _pair_id(ex: Example) -> str:
    return f"{ex.id}+{ex.id_b}" if ex.id_b is not None else ex.id


def _groups(examples: Iterable[Example], key: Callable[[Example], str]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[key(ex)].append(ex)
    return groups


def _duplicates(examples: Sequence[Example], kind: str) -> tuple[Finding, Finding]:
    """(exact, near): count = examples beyond the first of their group."""
    exact = _groups(examples, lambda ex: code_key(ex, kind, lambda s: s))
    norm = _groups(examples, lambda ex: code_key(ex, kind, normalise_code))
    exact_dups = [g for g in exact.values() if len(g) > 1]
    exact_found = Finding(sum(len(g) - 1 for g in exact_dups), [[_pair_id(e) for e in g] for g in exact_dups])
    near_count = (len(examples) - len(norm)) - exact_found.count
    near_groups = []
    for group in norm.values():
        if len({code_key(e, kind, lambda s: s) for e in group}) > 1:
            near_groups.append([_pair_id(e) for e in group])
    near_found = Finding(near_count, near_groups)
    for finding in (exact_found, near_found):
        finding.examples = [g[:MAX_EXAMPLES] for g in finding.examples[:MAX_EXAMPLES]]
    return exact_found, near_found


def _leakage(by_split: dict[str, list[Example]], kind: str) -> dict[str, Finding]:
    """earlier->later: examples of the later split whose code is in the earlier one.

    Pairs of the canonical splits (train, valid, test) are always listed, 0 or not; any other pair only
    when it leaks. Each key is looked up in an index of the splits holding it, so the cost follows the
    examples and the leaks found, not the square of the number of splits (400 split files once meant
    80,000 pairs, each scanned and printed)."""
    names = list(by_split)
    rank = {name: i for i, name in enumerate(names)}
    keyed = {s: _groups(by_split[s], lambda ex: code_key(ex, kind, normalise_code)) for s in names}
    holders: dict[str, list[str]] = defaultdict(list)  # key -> splits holding it, in split order
    for split in names:
        for key in keyed[split]:
            holders[key].append(split)
    found: dict[tuple[str, str], Finding] = {
        (a, b): Finding() for i, a in enumerate(names) for b in names[i + 1 :] if {a, b} <= set(SPLIT_ORDER)
    }
    for key, splits in holders.items():
        for j, later in enumerate(splits):
            for earlier in splits[:j]:
                finding = found.setdefault((earlier, later), Finding())
                finding.count += len(keyed[later][key])
                if len(finding.examples) < MAX_EXAMPLES:
                    finding.examples.append(
                        [_pair_id(keyed[earlier][key][0]), _pair_id(keyed[later][key][0])]
                    )
    ordered = sorted(found, key=lambda pair: (rank[pair[0]], rank[pair[1]]))
    return {f"{a}->{b}": found[(a, b)] for a, b in ordered}


def _conflicts(by_split: dict[str, list[Example]], task: TaskSpec) -> Finding:
    """Keys seen with two or more labels, across all splits (a train/test conflict counts too)."""
    groups: dict[str, list[tuple[str, Example]]] = defaultdict(list)
    for split, examples in by_split.items():
        for ex in examples:
            groups[code_key(ex, task.kind, normalise_code)].append((split, ex))
    labels = task.labels or []
    found = Finding()
    for members in groups.values():
        if len({ex.label for _, ex in members}) < 2:
            continue
        found.count += 1
        if len(found.examples) < MAX_EXAMPLES:
            found.examples.append(
                [f"{split}:{_pair_id(ex)}={labels[ex.label]}" for split, ex in members[: MAX_EXAMPLES + 1]]
            )
    return found


# ---------------------------------------------------------------------------------------------------
# Entry point


def _ordered(splits: Iterable[str]) -> list[str]:
    known = [s for s in SPLIT_ORDER if s in splits]
    return known + sorted(s for s in splits if s not in SPLIT_ORDER)


def _split_report(
    split: str, examples: list[Example], task: TaskSpec, count_tokens: TokenCounter
) -> SplitReport:
    labels = positive_rate = None
    if kind_of(task).labelled and task.labels:
        counts = Counter(ex.label for ex in examples)
        labels = {name: counts.get(i, 0) for i, name in enumerate(task.labels)}
        if len(task.labels) == 2 and examples:
            positive_rate = counts.get(1, 0) / len(examples)
    inputs = [ex.code + ("\n" + ex.code_b if ex.code_b is not None else "") for ex in examples]
    side = [ex.query if task.kind == TaskKind.RETRIEVAL else ex.target for ex in examples]
    has_side = task.kind in (TaskKind.RETRIEVAL, TaskKind.GENERATION)
    exact, near = _duplicates(examples, task.kind)
    return SplitReport(
        split=split,
        count=len(examples),
        empty=sum(1 for ex in examples if not ex.code.strip()),
        labels=labels,
        positive_rate=positive_rate,
        lengths=_length_stats(count_tokens(inputs)),
        side_lengths=_length_stats(count_tokens([s or "" for s in side])) if has_side else None,
        exact_duplicates=exact,
        near_duplicates=near,
    )


def inspect_task(task: TaskSpec, root: str | Path | None, tokenizer: str | None = None) -> InspectReport:
    """Read every split of `task` under `root` (through the format reader) and check it."""
    description, count_tokens = make_token_counter(tokenizer)
    with listing_cache():  # the folder is listed once, not once per split file
        splits = _ordered(require_splits(task, root))
        by_split = {s: load_split(task, root, s) for s in splits}
    return InspectReport(
        task=task.name,
        kind=task.kind,
        root=str(root if root is not None else task.data),
        tokenizer=description,
        splits={s: _split_report(s, exs, task, count_tokens) for s, exs in by_split.items()},
        leakage=_leakage(by_split, task.kind),
        conflicts=_conflicts(by_split, task) if kind_of(task).labelled else None,
    )
