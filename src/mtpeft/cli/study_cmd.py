"""`mtpeft study | report`: experiment grids and their reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from mtpeft.store import RunRecord
    from mtpeft.study.runner import Job, Outcome
    from mtpeft.study.spec import StudySpec

# What the study will do with a run, by the latest store status of its run key.
ACTIONS = {
    None: "new",
    "finished": "skip",
    "interrupted": "resume",
    "failed": "retry",
    "running": "skip (running)",
}


def _human(value: float | None, unit: str = "") -> str:
    if value is None:
        return "unknown"
    for suffix in ("", "K", "M", "G", "T", "P"):
        if abs(value) < 1000:
            return f"{value:.1f}{suffix}{unit}"
        value /= 1000
    return f"{value:.1f}E{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def plan_table(spec: StudySpec, jobs: list[Job], records: list[RunRecord]) -> tuple[Table, list[str]]:
    """The runs of the study with what will happen to each and its estimated cost; plus footnotes."""
    from rich import box
    from rich.table import Table

    from mtpeft.layout import checkpointed_steps
    from mtpeft.report.console import plain
    from mtpeft.study.estimate import estimate_run, measured_throughput

    table = Table(
        title=plain(f"Study {spec.name}: {len(jobs)} runs (workspace {spec.workspace})"),
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    for column in ("#", "tasks", "model/method", "seed", "action"):
        table.add_column(column, overflow="fold" if column == "tasks" else "ellipsis")
    for column in ("batches", "tokens", "FLOPs", "time"):
        table.add_column(column, justify="right", no_wrap=True)
    throughputs: dict[tuple[str, str], object] = {}
    totals = {"tokens": 0.0, "flops": 0.0, "seconds": 0.0}
    unknown = {"flops": False, "seconds": False}
    for i, job in enumerate(jobs, 1):
        cfg = job.planned.config
        key = (cfg.model, cfg.method)
        if key not in throughputs:
            throughputs[key] = measured_throughput(records, *key)
        resumed = job.previous in ("interrupted", "failed")
        est = estimate_run(cfg, throughputs[key], checkpointed_steps(cfg) if resumed else 0)
        todo = job.previous != "finished"
        if todo:
            totals["tokens"] += est.tokens
            for name, value in (("flops", est.flops), ("seconds", est.seconds)):
                unknown[name] |= value is None
                totals[name] += value or 0.0
        table.add_row(
            str(i),
            plain("all" if job.planned.task_set == "all" else " + ".join(job.planned.group)),
            plain(f"{cfg.model}/{job.planned.method_label}"),
            str(cfg.seed),
            ACTIONS.get(job.previous, job.previous or "new"),
            f"{est.micro_batches:,}",
            _human(est.tokens),
            _human(est.flops),
            _duration(est.seconds),
        )
    todo_count = sum(j.previous != "finished" for j in jobs)
    time_text = f"~{_duration(totals['seconds'])}" if totals["seconds"] else "unknown"
    if unknown["seconds"] and totals["seconds"]:
        time_text += " for the runs with an estimate (others unknown)"
    notes = [
        f"To run: {todo_count} of {len(jobs)}; {_human(totals['tokens'])} tokens at most, "
        f"{'unknown' if unknown['flops'] else _human(totals['flops'])} FLOPs (est.), training time "
        f"{time_text} (evaluation and model loading not included).",
        "batches: micro-batches = steps still to train x tasks (a run to resume counts from its last "
        "checkpoint); tokens: micro-batches x batch x max length (padded: an upper bound); FLOPs "
        "(estimate) ~ 6 (full) or 4 (PEFT) x backbone params x tokens, plus 2 x params x tokens of the "
        "lookahead's forward passes where `affinity` is set.",
    ]
    sources = {f"{m}/{meth}: {t.source}" for (m, meth), t in throughputs.items() if t is not None}
    missing = sorted(f"{m}/{meth}" for (m, meth), t in throughputs.items() if t is None)
    notes += [f"time from measured throughput: {s}" for s in sorted(sources)]
    if missing:
        notes.append(
            f"time unknown for {', '.join(missing)}: no finished run of that model in the store yet."
        )
    return table, notes


def merge_notes(spec: StudySpec, jobs: list[Job], records: list[RunRecord]) -> list[str]:
    """One line per merged arm of the study (made after its single-task runs, without training)."""
    from mtpeft.study.merging import plan_merges
    from mtpeft.study.runner import latest_by_key

    merges, notes = plan_merges(spec, [j.planned for j in jobs])
    latest = latest_by_key([r for r in records if r.study == spec.name])
    for merge in merges:
        status = latest[merge.key].status if merge.key in latest else None
        action = ACTIONS.get(status, status or "new")
        notes.append(
            f"merged arm {merge.display_name}: {action} (no training; after its {len(merge.sources)} "
            "single-task runs)"
        )
    return notes


def outcome_table(outcomes: list[Outcome]) -> Table:
    from rich.table import Table

    from mtpeft.report.console import plain

    table = Table(title="Study runs")
    for column in ("run", "result", "attempts", "error"):
        table.add_column(column)
    for o in outcomes:
        result = o.status
        if o.status == "trained" and o.previous in ("interrupted", "failed"):
            # The first attempt continued the earlier one from its last checkpoint (if it had saved one).
            result = f"resumed ({o.previous} before)" if o.attempts == 1 else "trained from scratch"
        table.add_row(plain(o.name), result, str(o.attempts), plain((o.error or "")[:200]))
    return table


def _study(
    study_file: Path = typer.Argument(..., help="Study YAML (see examples/studies/)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the runs and their estimated cost; train nothing."
    ),
    workspace: str | None = typer.Option(None, help="Override the study's workspace (runs/ and the store)."),
    executor: str | None = typer.Option(None, help="local | ray (default: the study's `executor`)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run a grid of models x methods x task sets x seeds; skips finished runs, resumes interrupted ones."""
    from mtpeft.config_files import located
    from mtpeft.errors import ConfigError
    from mtpeft.report.console import console, markup_safe, plain
    from mtpeft.store import RunStore
    from mtpeft.study.runner import run_study, store_path
    from mtpeft.study.spec import load_study

    spec = load_study(study_file).with_workspace(workspace)
    try:
        jobs = _checked_jobs(spec, study_file, dry_run)  # before the store (or anything) is written
    except ConfigError as err:
        raise located(err, study_file) from err
    records = RunStore(store_path(spec)).list_runs() if store_path(spec).is_file() else []
    table, notes = plan_table(spec, jobs, records)
    notes += merge_notes(spec, jobs, records)
    console.print(table)
    for note in notes:
        console.print(plain(note))
    if dry_run:
        return
    store = RunStore(store_path(spec))
    try:
        outcomes = run_study(spec, progress=progress, executor=executor, jobs=jobs)
    except KeyboardInterrupt:
        finished = sum(r.status == "finished" for r in store.list_runs(study=spec.name))
        console.print(
            f"[yellow]stopped: {finished} finished run(s) are kept in {markup_safe(store.path)}; run the "
            "same command again to skip them and resume the interrupted run from its last checkpoint."
            "[/yellow]"
        )
        raise typer.Exit(130) from None
    console.print(outcome_table(outcomes))
    console.print(
        plain(f"report: mtpeft report --workspace {spec.workspace} --study {spec.name} --out REPORT_DIR")
    )
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed twice; see the errors above. Re-run to retry.[/red]")
        raise typer.Exit(1)


def _checked_jobs(spec: StudySpec, study_file: Path, dry_run: bool) -> list[Job]:
    """The study's runs with what the store knows of them, after the preflight of those still to train
    (a dry run leaves the data alone: it may come before the data is built).

    An existing store is only read; a missing one is not created here (a dry run creates nothing).
    """
    from mtpeft.store import RunStore
    from mtpeft.study.grid import expand
    from mtpeft.study.runner import Job, plan, store_path
    from mtpeft.training.preflight import preflight_study

    path = store_path(spec)
    jobs = plan(spec, RunStore(path)) if path.is_file() else [Job(p, None) for p in expand(spec)]
    todo = [j.planned.config for j in jobs if j.previous != "finished"]
    preflight_study(spec, todo, source=study_file, read_data=not dry_run)
    return jobs


def _report(
    out: Path = typer.Option(..., "--out", help="Folder for report.md, report.html, runs.csv, figures/."),
    study: str | None = typer.Option(None, help="Study name (default: the only study in the store)."),
    workspace: Path = typer.Option(Path("workspace"), help="Workspace holding mtpeft.sqlite."),
    split: str = typer.Option("test", help="Split whose scores the report compares."),
) -> None:
    """Build the study report from the store: Markdown, self-contained HTML, CSV of every run."""
    from mtpeft.report.build import build_report
    from mtpeft.report.console import console, plain

    files = build_report(workspace, out, study=study, split=split)
    lines = [f"report: {files.html}", str(files.markdown), f"{files.csv} ({len(files.figures)} figures)"]
    console.print(plain("\n        ".join(lines)))


def register(app: typer.Typer) -> None:
    app.command("study")(_study)
    app.command("report")(_report)
