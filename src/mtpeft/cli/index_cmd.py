"""`mtpeft index PATH --run RUN_DIR --out DIR` and `mtpeft search "query" --index DIR`: code search.

`index` extracts the tree's functions, methods and tests (the scanner's extractor), embeds them with
the run's retrieval head and writes DIR (mtpeft/index/store.py: vectors, unit locations, a manifest
naming the run). `search` loads the run the index names (or --run), refuses an index another run
built, and prints the k best units with file:line, name and cosine score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mtpeft.errors import InputError

if TYPE_CHECKING:
    from mtpeft.index import Hit, SearchIndex

SEARCH_FORMATS = ("table", "json")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)


def index(
    path: Path = typer.Argument(..., help="Source folder (or one file) to index."),
    run_dir: Path = typer.Option(
        ..., "--run", help="A trained run (or export folder) with a retrieval task (e.g. code-search)."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Index folder to write: new, empty, or an index to replace (any other folder is refused).",
    ),
    task: str | None = typer.Option(
        None, "--task", help="The retrieval task to embed with (default: the first)."
    ),
    exclude: list[str] = typer.Option([], "--exclude", help="Gitignore-style pattern to leave out (repeat)."),
    default_excludes: bool = typer.Option(True, "--default-excludes/--no-default-excludes"),
    languages: list[str] = typer.Option([], "--language", help="Only these languages (repeat)."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=2, help="Tokens per unit (default: the task's trained max_length)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: the GPU if there is one)."),
) -> None:
    """Embed every function, method and test under PATH for `mtpeft search`."""
    from mtpeft.api import load
    from mtpeft.index import build_index
    from mtpeft.index.store import check_target

    if not path.exists():
        raise InputError(f"{path}: no such file or folder to index")
    check_target(out, path)  # before the model loads: never replace a folder that is not an index
    run = load(run_dir, device=device, batch_size=batch_size)
    languages = [name.strip() for value in languages for name in value.split(",") if name.strip()]
    try:
        built = build_index(
            run,
            path,
            out,
            task=task,
            exclude=exclude,
            use_default_excludes=default_excludes,
            languages=languages or None,
            max_tokens=max_tokens,
            progress=progress,
        )
    except ValueError as err:  # an unknown language
        raise InputError(str(err)) from None
    typer.echo(
        f"indexed {len(built.index)} units from {built.files} files with task '{built.index.task}' -> {out}",
        err=True,
    )
    typer.echo(
        f"{len(built.skipped)} files skipped, {built.truncated} units truncated to "
        f"{built.max_tokens} tokens; {built.seconds:.1f} s",
        err=True,
    )


def search(
    query: str = typer.Argument(..., help="What you are looking for, in words (like a docstring)."),
    index_dir: Path = typer.Option(..., "--index", help="An index folder written by `mtpeft index`."),
    k: int = typer.Option(10, "-k", "--top", min=1, help="How many results."),
    run_dir: Path | None = typer.Option(
        None, "--run", help="The run to embed the query with (default: the one the index names)."
    ),
    fmt: str = typer.Option("table", "--format", help="table | json."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: the GPU if there is one)."),
) -> None:
    """Rank the indexed units for QUERY with the run that built the index."""
    from mtpeft.api import load
    from mtpeft.index import load_index

    if fmt not in SEARCH_FORMATS:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(SEARCH_FORMATS)}")
    loaded = load_index(index_dir)  # torch-free: a damaged or foreign index fails before the model loads
    run_dir = _run_for(loaded, run_dir)
    run = load(run_dir, device=device)
    hits = run.search(query, k, index=loaded)
    if fmt == "json":
        root = _readable(str(loaded.root))
        typer.echo(json.dumps({"query": query, "root": root, "hits": [_hit_json(h) for h in hits]}))
    else:
        _print_hits(hits, loaded)


def _run_for(loaded: SearchIndex, run_dir: Path | None) -> Path:
    """The run to load, checked against the manifest by its id and best/ files before the model loads."""
    from mtpeft.export import is_export
    from mtpeft.index import RunRef, SearchIndexError

    chosen = run_dir or loaded.run_dir
    if not ((chosen / "best").is_dir() or is_export(chosen)):
        where = "given with --run" if run_dir else "named by the index"
        raise SearchIndexError(
            f"the run {where}, {chosen}, holds no trained model (moved or deleted?)",
            path=loaded.directory,
            hint="pass --run with the run's current folder",
        )
    loaded.check_run(RunRef.on_disk(chosen))
    return chosen


def _hit_json(hit: Hit) -> dict[str, object]:
    return {
        "rank": hit.rank,
        "score": round(hit.score, 6),
        "path": _readable(hit.path),  # a file name's undecodable bytes as \\xNN, as scan's json has them
        "line": hit.start_line,
        "end_line": hit.end_line,
        "name": hit.name,
        "kind": hit.kind,
        "language": hit.language,
    }


def _print_hits(hits: list[Hit], loaded: SearchIndex) -> None:
    """Plain text, never markup; names and paths come from the user's code, so a terminal control
    (`ESC[2J` in a file name) or an undecodable byte is shown as `\\xNN`, never sent raw."""
    if not hits:
        typer.echo("no results")
        return
    locations = [_shown(h.location) for h in hits]
    width = max(map(len, locations))
    typer.echo(f"{'rank':>4}  {'score':>6}  {'location':<{width}}  name", err=False)
    for h, location in zip(hits, locations, strict=True):
        typer.echo(f"{h.rank:>4}  {h.score:>6.3f}  {location:<{width}}  {_shown(h.name)} ({_shown(h.kind)})")
    typer.echo(f"(paths relative to {_shown(loaded.root)})", err=True)


def _shown(text: object) -> str:
    from mtpeft.report.console import printable

    return printable(_readable(str(text)))


def _readable(text: str) -> str:
    from mtpeft.scan.units import readable as escaped  # imported when used: `mtpeft --help` stays light

    return escaped(text)
