"""Split a dataset by project into a held-in folder (train/valid/test) and a held-out folder (test only).

A cross-project evaluation needs a model that never saw the held-out projects: train on the held-in
folder, then score it on the held-out one with `mtpeft evaluate RUN_DIR --data TASK=HELD_OUT`
(docs/using/calibration.md, "Measured on other data"). Reads the two formats of ../shared/data that
carry a `project` field: a JSON list (flakeflagger) and JSON lines (Devign format). Projects are
assigned whole, alternately in order of size, so both sides get large and small projects; every
example of a held-out project (from all three splits) goes into the held-out test split.

    python examples/cross-dataset/split_by_project.py ../shared/data/flakeflagger \
        --held-in workspace/cross-data/flaky-held-in --held-out workspace/cross-data/flaky-held-out
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

SPLITS = ("train", "valid", "test")


def read_split(folder: Path, split: str) -> tuple[list[dict], str]:
    """The split's examples and its file suffix (`.json`: one JSON list; `.jsonl`: one object a line)."""
    for suffix in (".json", ".jsonl"):
        path = folder / f"{split}{suffix}"
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            rows = (
                json.loads(text)
                if suffix == ".json"
                else [json.loads(line) for line in text.splitlines() if line.strip()]
            )
            missing = [i for i, row in enumerate(rows) if "project" not in row]
            if missing:
                raise SystemExit(
                    f"{path}: example {missing[0]} has no 'project' field; this script splits by it"
                )
            return rows, suffix
    raise SystemExit(f"{folder}: no {split}.json or {split}.jsonl")


def write_split(folder: Path, split: str, suffix: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=0) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def assign_projects(sizes: Counter) -> set[str]:
    """The held-out projects: every second project in order of size (ties by name, so it is stable)."""
    ordered = sorted(sizes, key=lambda project: (-sizes[project], project))
    return set(ordered[1::2])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="folder with train/valid/test .json or .jsonl")
    parser.add_argument("--held-in", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    args = parser.parse_args()
    splits = {split: read_split(args.data, split) for split in SPLITS}
    sizes = Counter(row["project"] for rows, _ in splits.values() for row in rows)
    held_out = assign_projects(sizes)
    out_rows: list[dict] = []
    for split, (rows, suffix) in splits.items():
        write_split(args.held_in, split, suffix, [row for row in rows if row["project"] not in held_out])
        out_rows += [row for row in rows if row["project"] in held_out]
    write_split(args.held_out, "test", splits["test"][1], out_rows)
    for name, rows in (
        ("held-in", [r for rs, _ in splits.values() for r in rs if r["project"] not in held_out]),
        ("held-out", out_rows),
    ):
        labels = Counter(row.get("label", row.get("target")) for row in rows)
        projects = sorted({row["project"] for row in rows})
        counts = f"{len(rows)} examples, labels {dict(sorted(labels.items()))}"
        print(f"{name}: {counts}, {len(projects)} projects: {', '.join(projects)}")


if __name__ == "__main__":
    main()
