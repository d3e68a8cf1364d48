"""Tiny datasets in every published format, with a signal a model can learn, for fast tests.

    folder = write_fixture_dataset("devign-jsonl", tmp_path)  # tmp_path/devign-jsonl/{train,valid,test}.jsonl
    examples = load_split(get_task(FIXTURE_TASKS["devign-jsonl"]), folder, "train")

Signals: binary tasks have label 1 exactly when the code contains MARKER; complexity labels each come
with their own marker (COMPLEXITY_MARKERS); clone pairs are two functions of the same family (same
operation, other names); code-search queries share their words with the method name; repair fixes
one wrong operator. Every split holds `n_per_split` examples, binary and pair labels half and half.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from mtpeft.errors import ConfigError

SPLITS = ("train", "valid", "test")
MARKER = "danger_call"
COMPLEXITY_MARKERS = {
    "1": "return_first",
    "logn": "halve_range",
    "n": "single_loop",
    "nlogn": "sort_then_scan",
    "n_square": "nested_loop",
}
# The built-in task that reads each fixture format.
FIXTURE_TASKS = {
    "devign-jsonl": "vulnerability",
    "devign-json": "vulnerability-devign-json",
    "bigclonebench": "clone",
    "codesearchnet": "code-search",
    "flakeflagger-json": "flaky",
    "jsonl": "complexity",
    "code-refinement": "repair",
}
_NAMES = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
_VERBS = ["count", "sort", "merge", "filter", "reverse", "parse", "encode", "load", "close", "format"]
_NOUNS = ["users", "orders", "files", "tokens", "rows", "events", "pages", "items", "tasks", "nodes"]
_ADJECTIVES = ["active", "cached", "pending", "remote", "sorted", "unique", "valid", "empty"]
_CLONE_FAMILIES = {
    "sum": "int acc = 0; for (int x : {v}) acc += x; return acc;",
    "max": "int best = {v}[0]; for (int x : {v}) if (x > best) best = x; return best;",
    "count_even": "int n = 0; for (int x : {v}) if (x % 2 == 0) n++; return n;",
    "first_negative": "for (int i = 0; i < {v}.length; i++) if ({v}[i] < 0) return i; return -1;",
    "product": "long p = 1; for (int x : {v}) p *= x; return (int) p;",
    "sorted_median": "int[] c = {v}.clone(); java.util.Arrays.sort(c); return c[c.length / 2];",
}
_BUGS = {"cmp": [("<=", "<"), ("==", "<"), (">", "<")], "op": [("-", "+"), ("*", "+"), ("/", "+")]}


def write_fixture_dataset(format_name: str, root: Path, n_per_split: int = 16, seed: int = 0) -> Path:
    """Write a tiny dataset in `format_name` under `root/<format_name>/` and return that folder."""
    if format_name not in _WRITERS:
        raise ConfigError(
            f"no fixture writer for format '{format_name}'; known: {', '.join(sorted(_WRITERS))}"
        )
    folder = Path(root) / format_name
    folder.mkdir(parents=True, exist_ok=True)
    _WRITERS[format_name](folder, n_per_split, random.Random(seed))
    return folder


def _balanced(n: int, rng: random.Random, classes: int = 2) -> list[int]:
    labels = [i % classes for i in range(n)]
    rng.shuffle(labels)
    return labels


def _c_function(rng: random.Random, index: int, vulnerable: bool) -> str:
    name, buffer = rng.choice(_NAMES), rng.choice(_NOUNS)
    risky = f"{MARKER}({buffer}, input);" if vulnerable else f"safe_copy({buffer}, input, len);"
    body = [
        f"int total = {rng.randint(0, 99)};",
        risky,
        f"for (int k = 0; k < len; k++) total += {buffer}[k];",
    ]
    return (
        f"int handle_{name}_{index}(char *{buffer}, const char *input, int len) {{\n"
        + "\n".join(body)
        + "\nreturn total;\n}"
    )


def _java_test(rng: random.Random, index: int, flaky: bool) -> str:
    name = f"test{rng.choice(_VERBS).title()}{rng.choice(_NOUNS).title()}{index}"
    call = f"{MARKER}(server);" if flaky else "server.waitUntilReady();"
    return (
        f"@Test public void {name}(){{\n  Server server = start();\n"
        f"  {call}\n  assertTrue(server.isUp());\n}}"
    )


def _devign_records(n_per_split: int, rng: random.Random) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {}
    index = 0
    for split in SPLITS:
        records[split] = []
        for label in _balanced(n_per_split, rng):
            func = _c_function(rng, index, bool(label))
            records[split].append(
                {
                    "project": rng.choice(["ffmpeg", "qemu"]),
                    "commit_id": f"{index:040x}",
                    "target": label,
                    "func": func,
                    "idx": index,
                }
            )
            index += 1
    return records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def _write_devign_jsonl(folder: Path, n_per_split: int, rng: random.Random) -> None:
    for split, records in _devign_records(n_per_split, rng).items():
        _write_jsonl(folder / f"{split}.jsonl", records)


def _write_devign_json(folder: Path, n_per_split: int, rng: random.Random) -> None:
    functions: list[dict] = []
    for split, records in _devign_records(n_per_split, rng).items():
        indexes = [len(functions) + offset for offset in range(len(records))]
        functions += [{key: value for key, value in record.items() if key != "idx"} for record in records]
        (folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in indexes), encoding="utf-8")
    (folder / "function.json").write_text(json.dumps(functions, indent=1), encoding="utf-8")


def _write_flakeflagger(folder: Path, n_per_split: int, rng: random.Random) -> None:
    index = 0
    for split in SPLITS:
        records = []
        for label in _balanced(n_per_split, rng):
            project = rng.choice(["hector", "wildfly", "logback"])
            records.append(
                {
                    "code": _java_test(rng, index, bool(label)),
                    "label": label,
                    "project": project,
                    "test_name": f"org.{project}.ServerTest-test{index}",
                }
            )
            index += 1
        (folder / f"{split}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")


def _write_complexity(folder: Path, n_per_split: int, rng: random.Random) -> None:
    labels = list(COMPLEXITY_MARKERS)
    index = 0
    for split in SPLITS:
        records = []
        for label_index in _balanced(n_per_split, rng, classes=len(labels)):
            label = labels[label_index]
            code = (
                f"class Program{index} {{\n  static int solve(int[] {rng.choice(_NOUNS)}) {{\n"
                f"    return {COMPLEXITY_MARKERS[label]}({rng.randint(1, 999)});\n  }}\n}}"
            )
            records.append({"idx": str(index), "code": code, "label": label})
            index += 1
        _write_jsonl(folder / f"{split}.jsonl", records)


def _clone_function(rng: random.Random, family: str, function_id: int) -> str:
    variable = rng.choice(_NOUNS)
    body = _CLONE_FAMILIES[family].format(v=variable)
    name = f"{rng.choice(_VERBS)}{rng.choice(_NAMES).title()}{function_id}"
    return f"static int {name}(int[] {variable}) {{\n    {body}\n}}"


def _write_bigclonebench(folder: Path, n_per_split: int, rng: random.Random) -> None:
    families = list(_CLONE_FAMILIES)
    functions: list[dict] = []

    def new_function(family: str) -> str:
        function_id = str(1000 + len(functions))
        functions.append({"func": _clone_function(rng, family, len(functions)), "idx": function_id})
        return function_id

    for split in SPLITS:
        lines = []
        for label in _balanced(n_per_split, rng):
            family_a, other = rng.sample(families, 2)
            family_b = family_a if label else other
            lines.append(f"{new_function(family_a)}\t{new_function(family_b)}\t{label}\n")
        (folder / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    _write_jsonl(folder / "data.jsonl", functions)


def _write_codesearchnet(folder: Path, n_per_split: int, rng: random.Random) -> None:
    topics = [(verb, adjective, noun) for verb in _VERBS for adjective in _ADJECTIVES for noun in _NOUNS]
    rng.shuffle(topics)
    index = 0
    for split in SPLITS:
        records = []
        for _ in range(n_per_split):
            verb, adjective, noun = topics[index % len(topics)]
            name = f"{verb}{adjective.title()}{noun.title()}" + (str(index) if index >= len(topics) else "")
            code = (
                f"public int {name} ( List < Item > {noun} ) "
                f"{{ return helper . {verb} ( {noun} , {adjective} ) ; }}"
            )
            docstring = f"{verb} the {adjective} {noun} ."
            records.append(
                {
                    "repo": "fixture/repo",
                    "path": f"src/{name}.java",
                    "func_name": name,
                    "language": "java",
                    "code": code,
                    "code_tokens": code.split(),
                    "docstring": docstring,
                    "docstring_tokens": docstring.split(),
                    "url": f"fixture/{split}/{index}",
                    "idx": index,
                }
            )
            index += 1
        _write_jsonl(folder / f"{split}.jsonl", records)


def _write_code_refinement(folder: Path, n_per_split: int, rng: random.Random) -> None:
    template = (
        "public int METHOD_{i} ( int VAR_1 , int VAR_2 ) "
        "{{ if ( VAR_1 {cmp} VAR_2 ) return VAR_1 {op} {k} ; return VAR_2 ; }} "
    )
    index = 0
    for split in SPLITS:
        buggy, fixed = [], []
        for _ in range(n_per_split):
            slot = rng.choice(["cmp", "op"])  # the one token the fix changes
            wrong, right = rng.choice(_BUGS[slot])
            good = {"cmp": "<", "op": "+", "i": index, "k": rng.randint(0, 99)}
            buggy.append(template.format(**{**good, slot: wrong}) + "\n")  # CodeXGLUE lines end with a space
            fixed.append(template.format(**{**good, slot: right}) + "\n")
            index += 1
        (folder / f"{split}.buggy-fixed.buggy").write_text("".join(buggy), encoding="utf-8")
        (folder / f"{split}.buggy-fixed.fixed").write_text("".join(fixed), encoding="utf-8")


_WRITERS: dict[str, Callable[[Path, int, random.Random], None]] = {
    "devign-jsonl": _write_devign_jsonl,
    "devign-json": _write_devign_json,
    "bigclonebench": _write_bigclonebench,
    "codesearchnet": _write_codesearchnet,
    "flakeflagger-json": _write_flakeflagger,
    "jsonl": _write_complexity,
    "code-refinement": _write_code_refinement,
}
