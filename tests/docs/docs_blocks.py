"""The fenced code blocks of a Markdown page: found, checked against the real CLI, and executed.

Why not pytest-markdown-docs or pytest-examples: both run Python fences only (and pytest-markdown-docs
needs its own `--markdown-docs` collection over every .md file); neither checks a shell block's
`mtpeft ...` command against the CLI, which is where a renamed option would mislead a reader. So the
fences are found by markdown-it-py (the CommonMark parser rich already depends on; it gives each fence's
info string and line), and the rest is this small module:

- a Python block is executed in one namespace per page, in page order, compiled under the page's name
  with its own line numbers, so a traceback points at the page's line;
- every `mtpeft ...` command of a shell block is parsed by the real typer/click command tree (command,
  sub-command, options, required arguments) without being run: a renamed option or command fails;
- on an executed page, each such command then runs for real through `mtpeft.cli.main.main`, in the
  page's working folder (globs expanded as a shell would).

A block marked ```` ```bash {.skip} ```` (the attribute list the site's superfences renders as a class)
is not run; such blocks are counted, so nothing is skipped silently. Anything else in a shell block of
an executed page (a `git clone`, a `make`) is a failure unless its block is marked so.
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import shlex
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
PYTHON_LANGUAGES = ("python", "py", "python3")
_SKIP = re.compile(r"\{[^}]*\.skip\b[^}]*\}")
_SEPARATORS = {"|", "||", "&&", ";", "&"}
_REDIRECTS = {">", ">>", "<", "2>", "2>&1"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # as shown in messages, e.g. docs/getting-started.md
    line: int  # 1-based line of the opening fence
    language: str
    skip: bool  # marked {.skip}: deliberately not run
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Command:
    """One `mtpeft ...` command of a shell block: the CLI's arguments (after `mtpeft`)."""

    page: str
    line: int  # the page line the command starts on
    args: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class PageResult:
    failures: list[str] = field(default_factory=list)  # "page:line: what went wrong"
    ran: list[str] = field(default_factory=list)  # where each block that ran starts
    skipped: list[str] = field(default_factory=list)  # where each {.skip} block starts


def blocks(text: str, page: str) -> list[Block]:
    """Every fenced code block of a Markdown text, in order."""
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence" or token.map is None:
            continue
        info = token.info.strip()
        language = re.match(r"[{.\s]*([\w+-]*)", info).group(1).lower()  # "bash", or "{.bash .skip}"
        skip = bool(_SKIP.search(info))
        found.append(Block(page, token.map[0] + 1, language, skip, token.content))
    return found


def shell_lines(block: Block) -> Iterator[tuple[int, list[str]]]:
    """(page line, words) of each command of a shell block: continuations and quotes spanning lines
    joined, comments dropped, a line split at `|`, `&&`, `;` into its commands, redirections left out."""
    lines = block.code.splitlines()
    number = 0
    while number < len(lines):
        start, text = number, lines[number]
        while True:
            if text.endswith("\\") and number + 1 < len(lines):
                number += 1
                text = text[:-1] + " " + lines[number]
                continue
            try:
                words = _words(text)
            except ValueError:  # a quote closed on a later line (e.g. a JSON body over several lines)
                if number + 1 >= len(lines):
                    raise
                number += 1
                text += "\n" + lines[number]
                continue
            break
        number += 1
        for command in words:
            yield block.line + 1 + start, _without_redirects(command)


def _words(text: str) -> list[list[str]]:
    """The commands of one shell line, as lists of words (shlex: quotes, comments, operators)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split, lexer.commenters = True, "#"
    found: list[list[str]] = [[]]
    for word in lexer:
        if word in _SEPARATORS:
            found.append([])
        else:
            found[-1].append(word)
    return [words for words in found if words]


def _without_redirects(words: list[str]) -> list[str]:
    kept, drop_next = [], False
    for word in words:
        if drop_next:
            drop_next = False
        elif word in _REDIRECTS:
            drop_next = word != "2>&1"
        else:
            kept.append(word)
    return kept


def mtpeft_args(words: list[str]) -> list[str] | None:
    """The CLI arguments when the words are an mtpeft command (`mtpeft`, `.venv/bin/mtpeft`, or
    `... -m mtpeft.cli.main ...` as torchrun and accelerate launch write it); else None.

    Documentation notation is read as the reader would: `[--fail-on error]` (optional) gives its
    contents, and `...` (more of the same) is dropped."""
    if Path(words[0]).name == "mtpeft":
        rest = words[1:]
    elif "mtpeft.cli.main" in words and words[words.index("mtpeft.cli.main") - 1] == "-m":
        rest = words[words.index("mtpeft.cli.main") + 1 :]
    else:
        return None
    args = []
    for word in rest:
        word = word.removeprefix("[").removesuffix("]")
        if word and word != "...":
            args.append(word)
    return args


def commands(block: Block) -> list[Command]:
    return [
        Command(block.page, line, tuple(args))
        for line, words in shell_lines(block)
        if (args := mtpeft_args(words)) is not None
    ]


def parse_cli(args: tuple[str, ...] | list[str]) -> None:
    """Resolve the command and parse its options and arguments with the real CLI, without running it.

    Raises the CLI's usage error (no such command, no such option, missing argument, bad value)."""
    from typer.main import get_command

    from mtpeft.cli.main import app

    command = get_command(app)
    context = command.make_context("mtpeft", list(args))
    while hasattr(command, "resolve_command"):  # a group: resolve its sub-command, then parse that
        # click keeps the sub-command and its words here until the group is invoked; no public
        # accessor exists short of invoking it (which would run the command).
        rest = [*context._protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)


def check_commands(page_blocks: list[Block]) -> list[str]:
    """Every mtpeft command of every shell block (skipped ones too) parsed by the real CLI."""
    failures = []
    for block in page_blocks:
        if block.language not in SHELL_LANGUAGES:
            continue
        for command in commands(block):
            try:
                parse_cli(command.args)
            except Exception as err:  # the CLI's usage errors; typer ships its own click copy
                failures.append(f"{command.where}: mtpeft {' '.join(command.args)}: {err}")
    return failures


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """`mtpeft ARGS` through the real entry point in this process: (exit status, stdout, stderr)."""
    from mtpeft.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_stdin = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["mtpeft", *args], io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    finally:
        sys.argv, sys.stdin = saved_argv, saved_stdin
    return code, out.getvalue(), err.getvalue()


def _expanded(args: list[str]) -> list[str]:
    """Globs expanded against the working folder, as a shell would (a pattern matching nothing stays)."""
    out = []
    for arg in args:
        matches = sorted(glob.glob(arg)) if any(c in arg for c in "*?[") else []
        out.extend(matches or [arg])
    return out


def _run_python(block: Block, namespace: dict[str, Any]) -> str | None:
    # Blank lines before the code make the compiled line numbers the page's own.
    code = compile("\n" * block.line + block.code, block.page, "exec")
    try:
        exec(code, namespace)
    except Exception as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == block.page]
        line = frames[-1].lineno if frames else block.line
        return f"{block.page}:{line}: {type(err).__name__}: {err}"
    return None


def _run_shell(block: Block) -> list[str]:
    failures = []
    for line, words in shell_lines(block):
        args = mtpeft_args(words)
        where = f"{block.page}:{line}"
        if args is None:
            failures.append(
                f"{where}: `{' '.join(words)}` is not an mtpeft command; mark the block {{.skip}}"
            )
            continue
        try:
            parse_cli(args)
        except Exception as err:
            failures.append(f"{where}: mtpeft {' '.join(args)}: {err}")
            continue
        code, _, err = run_cli(_expanded(args))
        if code != 0:
            failures.append(f"{where}: mtpeft {' '.join(args)} exited {code}: {err.strip()[-500:]}")
    return failures


def run_page(text: str, page: str, namespace: dict[str, Any] | None = None) -> PageResult:
    """Execute a page's blocks in order (in the current working folder); a failing block does not stop
    the ones after it, but a Python failure leaves later blocks of the page to fail on their own."""
    result = PageResult()
    namespace = namespace if namespace is not None else {"__name__": "__docs__"}
    for block in blocks(text, page):
        if block.skip:
            result.skipped.append(block.where)
            result.failures += check_commands([block])  # not run, but its mtpeft commands still parse
            continue
        if block.language in PYTHON_LANGUAGES:
            failure = _run_python(block, namespace)
            result.failures += [failure] if failure else []
        elif block.language in SHELL_LANGUAGES:
            result.failures += _run_shell(block)
        else:
            continue  # yaml, text, json: shown, not run
        result.ran.append(block.where)
    return result
