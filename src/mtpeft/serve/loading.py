"""What `mtpeft serve` loads at start: runs (NAME=DIR or DIR) and search indexes, checked before serving.

Only these paths are ever read: no endpoint takes a path from a request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from mtpeft.errors import InputError

if TYPE_CHECKING:
    from mtpeft.api import Run
    from mtpeft.serve.app import ServedIndex

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_named(value: str, what: str) -> tuple[str, Path]:
    """'NAME=DIR' or 'DIR' (named after its folder); names are what clients send as "run"/"index"."""
    name, sep, path = value.partition("=")
    if not sep or not _NAME.match(name):  # a path that happens to hold '=' is still a path
        name, path = Path(value).resolve().name, value
    if not _NAME.match(name):
        raise InputError(f"{what} {value!r}: name it NAME=DIR with letters, digits, '.', '_' or '-'")
    return name, Path(path)


def load_runs(specs: list[str], *, device: str | None, batch_size: int) -> dict[str, Run]:
    """The runs by name, in the order given; runs on the same base share one backbone (load_many)."""
    import mtpeft

    named = [parse_named(spec, "run") for spec in specs]
    names = [name for name, _ in named]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two runs would be served as {duplicates[0]!r}: name them NAME=DIR")
    runs = mtpeft.load_many([path for _, path in named], device=device, batch_size=batch_size)
    return dict(zip(names, runs, strict=True))


def load_indexes(specs: list[str], runs: dict[str, Run]) -> dict[str, ServedIndex]:
    """Each index with the served run whose vectors it holds; an index no served run made is refused."""
    from mtpeft.index import SearchIndexError, load_index
    from mtpeft.serve.app import ServedIndex

    served: dict[str, ServedIndex] = {}
    for spec in specs:
        name, path = parse_named(spec, "index")
        if name in served:
            raise InputError(f"two indexes would be served as {name!r}: name them NAME=DIR")
        index = load_index(path)
        problems = []
        for run_name, run in runs.items():
            try:
                index.check_run(run)
            except SearchIndexError as err:
                problems.append(err)
                continue
            served[name] = ServedIndex(index, run_name)
            break
        else:
            raise InputError(
                f"index {path} was built by run {index.run_dir}, which is not served (or has changed since): "
                f"serve that run too, or rebuild the index with one of the served runs ({problems[0]})"
            )
    return served
