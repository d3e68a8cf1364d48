"""`mtpeft predict RUN_DIR INPUT.jsonl|-`: JSON lines in, one JSON line of answers out per input line.

In:  {"code": "..."}                    every one-snippet task of the run (or of --tasks)
     {"code": "...", "code_b": "..."}   every pair task (clone detection)
     an optional "id" (string or integer; default: the line number); other fields are ignored.
Out: {"id": ..., "predictions": {"<task>": {"label": "1", "probability": 0.93}, ...}}
     (with --probabilities, each task's "probabilities" of every label too; with --precision P, each
     binary and pair task's "flagged": whether P(positive label) reaches the threshold at which the
     run's validation precision reaches P, listed on stderr with its validation recall).

Lines are read and answered N at a time (--batch-size) and each batch is written and flushed before the
next is read, so `-` (stdin) streams; blank lines are skipped. A bad line (not JSON, no "code", a
non-string, empty or whitespace-only code, invalid Unicode, or what the data readers refuse: nesting
deeper than 64, an integer of more than 40 digits, a key twice in one object) is reported on stderr with
its line number and field: by default (--on-error stop) the lines before it are answered and the command
stops with exit status 2; with --on-error skip it is left out of the output and the rest is answered
(exit status 0, the count of skipped lines on stderr).

--out FILE is written through a temporary file renamed over FILE at the end (mtpeft/outputs.py): a crash
or Ctrl-C leaves an existing FILE as it was, and an --out that is the input (any spelling, a link, the
file stdin is redirected from) is refused before anything is read.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from mtpeft.data.example import blank_text_problem
from mtpeft.errors import DataError, InputError, shorten

if TYPE_CHECKING:
    from mtpeft.api import Run

ON_ERROR = ("stop", "skip")
STDIN = "-"


@dataclass(frozen=True)
class Request:
    line: int
    id: str | int
    code: str
    code_b: str | None


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    run_dir: Path = typer.Argument(
        ..., help="A trained run directory (workspace/runs/...), or a folder `mtpeft export` wrote."
    ),
    input_path: str = typer.Argument(
        ...,
        metavar="INPUT",
        help='JSON lines file, or - for stdin. Each line {"code": ...} (one-snippet tasks) or '
        '{"code": ..., "code_b": ...} (pair tasks), with an optional "id".',
    ),
    tasks: list[str] = typer.Option(
        [],
        "--tasks",
        help="Tasks to answer (repeat, or comma-separated); default: every task that fits a line.",
    ),
    batch_size: int = typer.Option(
        32, "--batch-size", min=1, help="Lines answered together; output is flushed after each batch."
    ),
    on_error: str = typer.Option(
        "stop",
        "--on-error",
        help="A bad line: stop (default; answer the lines before it, exit 2) or skip it.",
    ),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Also write every label's probability for each task."
    ),
    precision: float | None = typer.Option(
        None,
        "--precision",
        help='Add "flagged" to each binary/pair answer: P(positive) at or above the smallest threshold at '
        "which the run's validation precision reaches this (e.g. 0.9); refused where none reaches it.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the JSON lines here instead of stdout."),
    device: str | None = typer.Option(
        None, help="cpu, cuda, cuda:1, ... (default: the GPU if there is one)."
    ),
) -> None:
    """Answer the run's tasks for each JSON line of INPUT (streams stdin with -).

    Out, per line: {"id": ..., "predictions": {task: {"label": ..., "probability": ...}}}; a generation
    task (summarization, repair) answers {"text": ...}.

    A bad line is reported on stderr with its number: stop there (default, exit 2) or --on-error skip.
    """
    if on_error not in ON_ERROR:
        raise InputError(f"--on-error {shorten(on_error)}: choose stop or skip")
    if out is not None:  # before anything is opened: `--out in.jsonl` would empty the input
        _check_output(out, input_path)
    names = [t.strip() for item in tasks for t in item.split(",") if t.strip()]
    cuts = _precision_cuts(run_dir, precision, names) if precision is not None else {}
    with _opened_input(input_path) as stream:  # a missing file fails before the model loads
        from mtpeft.api import load

        run = load(run_dir, device=device, batch_size=batch_size)
        single, pairs = _tasks(run, names)
        if run.info["calibration"] == "uncalibrated":
            typer.echo(f"{run_dir}: uncalibrated (raw softmax probabilities; mtpeft calibrate RUN)", err=True)
        elif run.ood is None:  # calibrated before OOD statistics existed: answers carry no "unfamiliar"
            typer.echo(f"{run_dir}: {run.info['ood']} (mtpeft calibrate RUN fits them)", err=True)
        with _opened_output(out) as sink:
            try:
                answered, skipped, stopped = _stream(
                    stream, input_path, sink, run, single, pairs, batch_size, on_error, (probabilities, cuts)
                )
            except BrokenPipeError:  # `mtpeft predict ... | head`: the reader has all it wanted
                _silence_stdout()
                return
    if stopped is not None:  # raised only now, so --out keeps the answers to the lines before it
        raise stopped
    note = f", skipped {skipped} bad line{'s' * (skipped != 1)}" if skipped else ""
    typer.echo(f"answered {answered} line{'s' * (answered != 1)}{note}", err=True)


def _check_output(out: Path, input_path: str) -> None:
    """A writable --out that is not the input, by any spelling or link (stdin redirected from it too)."""
    from mtpeft.outputs import check_output, refuse_overwriting_inputs

    check_output(out)
    if input_path != STDIN:
        refuse_overwriting_inputs(out, [input_path])
        return
    try:
        stdin = sys.stdin.fileno()
    except (OSError, ValueError):  # stdin replaced by an in-memory stream (tests, embedding): no file
        return
    refuse_overwriting_inputs(out, [stdin], names=["<stdin>"])  # `- --out in.jsonl < in.jsonl`


def _precision_cuts(run_dir: Path, precision: float, names: list[str]) -> dict[str, tuple[str, float]]:
    """{task: (positive label, threshold)} for --precision, chosen on the run's validation outputs."""
    from mtpeft.calibration_file import precision_cuts

    cuts = precision_cuts(run_dir, precision, names or None)
    for cut in cuts:
        typer.echo(cut.note(precision, "validation"), err=True)
    return {c.task: (c.positive_label, c.choice.threshold) for c in cuts}


def _tasks(run: Run, names: list[str]) -> tuple[list[str], list[str]]:
    """(one-snippet tasks, pair tasks) to answer; retrieval tasks are for `mtpeft search`.

    One-snippet tasks include generation tasks (summaries, repairs): their answer is the generated text.
    """
    generated = [n for n in run.generation_tasks if run.tasks[n].kind == "generation"]
    if not names:
        if not run.snippet_tasks + run.pair_tasks + generated:
            raise InputError(
                "this run has no classification or pair task, so nothing to predict per line; its tasks rank "
                "code for a query: use `mtpeft index` and `mtpeft search`"
            )
        return run.snippet_tasks + generated, run.pair_tasks
    for name in names:
        if name not in run.tasks:
            listing = ", ".join(f"{t.name} ({t.kind})" for t in run.tasks.values())
            raise InputError(f"--tasks: unknown task {shorten(name)}; this run's tasks: {listing}")
        if name in run.retrieval_tasks:
            raise InputError(
                f"--tasks: {shorten(name)} is a retrieval task: it ranks code for a query, so it has no "
                "label per line; use `mtpeft index` and `mtpeft search`"
            )
    chosen = list(dict.fromkeys(names))
    alone = [n for n in chosen if n in run.snippet_tasks or n in generated]
    return alone, [n for n in chosen if n in run.pair_tasks]


def _stream(
    stream: IO[bytes],
    name: str,
    sink: IO[str],
    run: Run,
    single: list[str],
    pairs: list[str],
    batch_size: int,
    on_error: str,
    shown: tuple[bool, dict[str, tuple[str, float]]],
) -> tuple[int, int, DataError | None]:
    """(lines answered, lines skipped, the bad line that stopped it under --on-error stop).

    The stopping error is returned, not raised, so that the caller keeps the answers written so far:
    an exception inside the output's `with` would (rightly) throw away a half-written --out file.
    """
    where = "<stdin>" if name == STDIN else name
    answered = skipped = 0
    batch: list[Request] = []
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            batch.append(_parse(raw, number, where, single, pairs))
        except DataError as err:
            if on_error == "stop":
                answered += _answer(batch, run, single, pairs, sink, shown)
                return answered, skipped, err
            typer.echo(f"skipped: {err}", err=True)
            skipped += 1
        if len(batch) >= batch_size:
            answered += _answer(batch, run, single, pairs, sink, shown)
            batch = []
    answered += _answer(batch, run, single, pairs, sink, shown)
    return answered, skipped, None


def _parse(raw: bytes, number: int, where: str, single: list[str], pairs: list[str]) -> Request:
    from mtpeft.data.formats.textio import parse_json  # here: importing the readers slows every CLI start

    def bad(message: str, field: str | None = None) -> DataError:
        return DataError(message, path=where, line=number, field=field)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise bad(f"not UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1})") from None
    # The data readers' bounded parser: deep nesting, huge integers, a key twice and lone surrogates are
    # this line's error (json.loads raised RecursionError/ValueError, a traceback that lost the batch).
    record = parse_json(text, where, number)
    if not isinstance(record, dict):
        raise bad(f'expected a JSON object like {{"code": "..."}}, got {type(record).__name__}')
    code = _text_field(record, "code", bad)
    if code is None:
        raise bad("missing: every line needs the code to analyse", "code")
    code_b = _text_field(record, "code_b", bad)
    for field, value in (("code", code), ("code_b", code_b)):
        problem = blank_text_problem(value) if value is not None else None
        if problem:
            raise bad(problem, field)
    if code_b is None and not single:
        raise bad(f"missing: the chosen tasks ({', '.join(pairs)}) compare two snippets", "code_b")
    if code_b is not None and not pairs:
        raise bad("given, but no pair task is chosen (this run or --tasks has none): leave it out", "code_b")
    return Request(number, _id_field(record, number, bad), code, code_b)


def _text_field(record: dict[str, Any], field: str, bad: Any) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"must be a string, not {type(value).__name__}", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise bad(
            f"holds a lone surrogate (\\u{ord(value[err.start]):04x}), not valid Unicode", field
        ) from None
    return value


def _id_field(record: dict[str, Any], number: int, bad: Any) -> str | int:
    if "id" not in record:
        return number
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad(f"must be a string or an integer, not {type(value).__name__}", "id")
    return _text_field(record, "id", bad) if isinstance(value, str) else value  # type: ignore[return-value]


def _answer(
    batch: list[Request],
    run: Run,
    single: list[str],
    pairs: list[str],
    sink: IO[str],
    shown: tuple[bool, dict[str, tuple[str, float]]],
) -> int:
    """One analyze call for the one-snippet lines, one compare call per pair task; rows in input order.
    `shown`: (every label's probabilities too?, {task: (positive label, --precision threshold)})."""
    if not batch:
        return 0
    probabilities, cuts = shown
    rows: dict[int, dict[str, Any]] = {r.line: {} for r in batch}
    alone = [r for r in batch if r.code_b is None]
    both = [r for r in batch if r.code_b is not None]
    classified = [t for t in single if t in run.snippet_tasks]
    if alone and classified:
        for request, answer in zip(alone, run.analyze([r.code for r in alone], classified), strict=True):
            rows[request.line] = answer
    for task in [t for t in single if t not in classified] if alone else []:
        texts = run.generate([r.code for r in alone], task)
        for request, text in zip(alone, texts, strict=True):
            rows[request.line][task] = {"text": text}
    for task in pairs if both else []:
        answers = run.compare([r.code for r in both], [r.code_b or "" for r in both], task)
        for request, answer in zip(both, answers, strict=True):
            rows[request.line][task] = answer
    for request in batch:
        predictions = {
            task: answer
            if probabilities or "text" in answer
            else {k: answer[k] for k in ("label", "probability", "ood_score", "unfamiliar") if k in answer}
            for task, answer in rows[request.line].items()
        }
        for task, (positive, cut) in cuts.items():
            if task in predictions:
                positive_p = rows[request.line][task]["probabilities"][positive]
                predictions[task] = {**predictions[task], "flagged": positive_p >= cut}
        sink.write(json.dumps({"id": request.id, "predictions": predictions}, ensure_ascii=False) + "\n")
    sink.flush()
    return len(rows)


@contextmanager
def _opened_input(name: str) -> Iterator[IO[bytes]]:
    if name == STDIN:
        yield sys.stdin.buffer
        return
    path = Path(name)
    if not path.is_file():
        raise InputError(f"{name}: no such file (give a JSON lines file, or - for stdin)")
    with path.open("rb") as stream:
        yield stream


@contextmanager
def _opened_output(path: Path | None) -> Iterator[IO[str]]:
    from mtpeft.outputs import atomic_output

    if path is None:
        yield sys.stdout
        return
    with atomic_output(path) as sink:  # a crash or Ctrl-C leaves an existing --out as it was
        yield sink


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
