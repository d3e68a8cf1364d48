"""Walk a source tree and extract its functions, methods and tests with tree-sitter.

Nothing about a single file is ever fatal: a file that cannot be used is listed in
``Extraction.skipped`` with the reason, and the scan goes on. Reasons:

- symbolic links, to files or directories: never followed (so a scan never leaves the tree, never
  loops, and never sees one file twice);
- not a regular file (a FIFO, a socket, a device), unreadable files and directories;
- bigger than ``max_file_bytes`` (generated code, amalgamations);
- binary (a NUL byte in the first 8 KiB) or not valid UTF-8 (a UTF-8 byte-order mark is accepted);
- parse errors over more than ``max_error_ratio`` of the file's bytes. Below that threshold the file
  is kept: tree-sitter recovers locally, and C with unexpanded macros often has a few errors.

- anything else that goes wrong on one file (an error in a walker, memory): the file is skipped with
  ``failure_reason``; syntax trees are walked without recursion (languages/base.py ``walk``), so
  nesting depth alone never gets here.

Files whose extension belongs to no registered language are not "skipped" by a folder walk: they are
simply not source code for this scan. A file named explicitly (``extract_tree(["a.py", "notes.md"])``,
as pre-commit passes the changed files) is another matter: the user asked for it, so one the scan
cannot read is listed in ``skipped`` with the reason. Explicitly named files are scanned even when an
exclude pattern matches them (as ruff and git add do); excludes apply to folder walks. Empty files are
read and yield no units.

Several paths: unit paths are relative to the current folder when every path is inside it (what
pre-commit and ``mtpeft scan src tests`` give), else to the paths' common folder. One path keeps the
single-root rule: a folder is its own root, a file's root is its folder.

The text of each unit (``CodeUnit.code``) is its source, dedented (its first line's indentation
included before dedenting), so that a method reads like a top-level function to the model; its
position is the original one.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tree_sitter import Node, Parser

from mtpeft.scan.ignore import PathFilter
from mtpeft.scan.languages import LANGUAGES, FileContext, Found, LanguageSpec, language_for
from mtpeft.scan.units import CodeUnit, SkippedFile

DEFAULT_MAX_FILE_BYTES = 2_000_000
DEFAULT_MAX_ERROR_RATIO = 0.10
_BINARY_PROBE = 8192
_BOM = b"\xef\xbb\xbf"


class SkipFile(Exception):
    """Raised inside extraction for one file; the message is the reason shown to the user."""


@dataclass
class Extraction:
    root: Path
    units: list[CodeUnit] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files: int = 0  # source files read and parsed
    seconds: float = 0.0


@dataclass(frozen=True)
class ExtractOptions:
    exclude: Sequence[str] = ()
    use_default_excludes: bool = True
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_error_ratio: float = DEFAULT_MAX_ERROR_RATIO
    languages: Collection[str] | None = None  # None: every registered language


def extract_tree(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    options: ExtractOptions | None = None,
    *,
    progress: bool = False,
) -> Extraction:
    """Extract every unit under ``root``: a directory, a single source file, or a list of both.

    Raises FileNotFoundError when a path does not exist and ValueError for an unknown language or
    an empty list; problems with the files inside are never raised (see the module docstring).
    """
    options = options or ExtractOptions()
    _check_languages(options.languages)
    start = time.perf_counter()
    paths = _as_paths(root)
    base = _base(paths)
    result = Extraction(root=base.resolve())
    parsers: dict[str, Parser] = {}
    files = _source_files(
        paths,
        base,
        PathFilter(options.exclude, use_defaults=options.use_default_excludes),
        options,
        result.skipped,
    )
    for rel, path, spec in _progress(files, progress):
        try:
            result.units.extend(extract_file(rel, path, spec, options, parsers))
            result.files += 1
        except SkipFile as reason:
            result.skipped.append(SkippedFile(rel, str(reason)))
        except Exception as exc:  # a limit or a bug met on ONE file costs that file only, not the scan
            parsers.pop(spec.name, None)  # a fresh parser for the next file, whatever state this one is in
            result.skipped.append(SkippedFile(rel, failure_reason(exc)))
    result.skipped.sort(key=lambda s: s.path)
    result.seconds = time.perf_counter() - start
    return result


def failure_reason(exc: BaseException) -> str:
    """One short line for a file whose extraction failed unexpectedly (the scan goes on without it)."""
    if isinstance(exc, MemoryError):
        return "not extracted: out of memory on this file"
    if isinstance(exc, RecursionError):
        return "not extracted: nested too deeply"
    detail = " ".join(str(exc).split())
    detail = detail if len(detail) <= 100 else detail[:99] + "\u2026"
    return f"not extracted: {type(exc).__name__}{': ' + detail if detail else ''} (please report this file)"


def _check_languages(languages: Collection[str] | None) -> None:
    unknown = sorted(set(languages or ()) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"unknown language(s) {unknown}; known: {sorted(LANGUAGES)}")


def _progress(
    files: Iterable[tuple[str, Path, LanguageSpec]], enabled: bool
) -> Iterable[tuple[str, Path, LanguageSpec]]:
    if not enabled:
        return files
    from tqdm import tqdm

    return tqdm(files, desc="extracting", unit=" files", leave=False)


# ----------------------------------------------------------------------------------------- walking


def _as_paths(root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    paths = [Path(root)] if isinstance(root, (str, os.PathLike)) else [Path(p) for p in root]
    if not paths:
        raise ValueError("no path to scan: give a folder or at least one file")
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(f"{path}: no such file or directory")
    return paths


def _base(paths: list[Path]) -> Path:
    """The folder unit paths are relative to (see the module docstring)."""
    if len(paths) == 1:
        return paths[0] if paths[0].is_dir() else paths[0].parent
    absolute = [Path(os.path.abspath(p)) for p in paths]  # abspath, not resolve: links stay as named
    cwd = Path.cwd()
    if all(p.is_relative_to(cwd) for p in absolute):
        return cwd
    common = Path(os.path.commonpath(absolute))
    return common if common.is_dir() else common.parent  # the same file named twice


def _relative(path: Path, base: Path) -> str:
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()
    return "" if rel == "." else rel


def _source_files(
    paths: list[Path],
    base: Path,
    path_filter: PathFilter,
    options: ExtractOptions,
    skipped: list[SkippedFile],
) -> Iterator[tuple[str, Path, LanguageSpec]]:
    """(relative path, path, language) of every source file to extract, in a stable order.

    Paths in the order given, each file once; each folder's files in name order, then its
    subfolders, depth first.
    """
    seen: set[str] = set()
    for path in paths:
        rel = _relative(path, base)
        if path.is_dir():
            found = _walk(path, rel + "/" if rel else "", path_filter, options, skipped)
        else:
            found = _named_file(path, rel or path.name, options, skipped)
        for item in found:
            if item[0] not in seen:
                seen.add(item[0])
                yield item


def _named_file(
    path: Path, rel: str, options: ExtractOptions, skipped: list[SkippedFile]
) -> Iterator[tuple[str, Path, LanguageSpec]]:
    """A file the user named: scanned even through a link or when excluded; else skipped with why."""
    spec = language_for(path.name)
    if spec is None:
        known = ", ".join(sorted(LANGUAGES))
        skipped.append(SkippedFile(rel, f"not a language the scan reads ({known})"))
    elif options.languages is not None and spec.name not in options.languages:
        skipped.append(SkippedFile(rel, f"{spec.name} is not among the languages asked for"))
    elif not path.is_file():  # a FIFO would block the read
        skipped.append(SkippedFile(rel, "not a regular file"))
    else:
        yield rel, path, spec


def _walk(
    root: Path, prefix: str, path_filter: PathFilter, options: ExtractOptions, skipped: list[SkippedFile]
) -> Iterator[tuple[str, Path, LanguageSpec]]:
    stack: list[tuple[Path, str]] = [(root, prefix)]
    while stack:
        directory, prefix = stack.pop()
        subdirs: list[tuple[Path, str]] = []
        for entry in _list_dir(directory, prefix, skipped):
            rel = prefix + entry.name
            found = _classify(entry, rel, path_filter, options, skipped)
            if found == "dir":
                subdirs.append((Path(entry.path), rel + "/"))
            elif found is not None:
                yield rel, Path(entry.path), found
        stack.extend(reversed(subdirs))  # depth-first, in name order


def _list_dir(directory: Path, prefix: str, skipped: list[SkippedFile]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(
            SkippedFile(prefix.rstrip("/") or ".", f"cannot read directory: {exc.strerror or exc}")
        )
        return []


def _classify(
    entry: os.DirEntry[str],
    rel: str,
    path_filter: PathFilter,
    options: ExtractOptions,
    skipped: list[SkippedFile],
) -> LanguageSpec | str | None:
    """'dir' to descend, a language to extract, or None (excluded, not source, or skipped)."""
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
        if path_filter.excluded(rel, is_dir=is_dir):
            return None
        if is_dir:
            return "dir"
        spec = _wanted_language(entry.name, options)
        if entry.is_symlink():
            if spec is not None or _points_to_dir(entry):
                skipped.append(SkippedFile(rel, "symbolic link, not followed"))
            return None
        if spec is None:
            return None
        if not entry.is_file(follow_symlinks=False):
            skipped.append(SkippedFile(rel, "not a regular file"))
            return None
        size = entry.stat(follow_symlinks=False).st_size
    except OSError as exc:
        skipped.append(SkippedFile(rel, f"cannot read: {exc.strerror or exc}"))
        return None
    if size > options.max_file_bytes:
        skipped.append(SkippedFile(rel, f"too big: {size:,} bytes (limit {options.max_file_bytes:,})"))
        return None
    return spec


def _wanted_language(name: str, options: ExtractOptions) -> LanguageSpec | None:
    spec = language_for(name)
    if spec is None or (options.languages is not None and spec.name not in options.languages):
        return None
    return spec


def _points_to_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:  # a loop or a dangling link
        return False


# ------------------------------------------------------------------------------------ one file


def extract_file(
    rel: str,
    path: Path,
    spec: LanguageSpec,
    options: ExtractOptions,
    parsers: dict[str, Parser] | None = None,
) -> list[CodeUnit]:
    """The units of one file; raises SkipFile with the reason when the file cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"cannot read: {exc.strerror or exc}") from None
    return extract_source(rel, data, spec, options, parsers)


def extract_source(
    rel: str,
    data: bytes,
    spec: LanguageSpec,
    options: ExtractOptions | None = None,
    parsers: dict[str, Parser] | None = None,
) -> list[CodeUnit]:
    """The units of one file's bytes (exposed for tests and for callers holding text in memory)."""
    options = options or ExtractOptions()
    data = _check_bytes(data, options)
    if not data.strip():
        return []
    parsers = parsers if parsers is not None else {}
    parser = parsers.get(spec.name) or parsers.setdefault(spec.name, spec.parser())
    tree = parser.parse(data)
    if tree.root_node.has_error:
        ratio = _error_bytes(tree.root_node) / max(len(data), 1)
        if ratio > options.max_error_ratio:
            raise SkipFile(f"parse errors in {ratio:.0%} of the file (limit {options.max_error_ratio:.0%})")
    ctx = FileContext(rel, data)
    builder = _UnitBuilder(ctx, spec.name, ascii_only=data.isascii())
    return [builder.build(found) for found in spec.extract(tree.root_node, ctx)]


def _check_bytes(data: bytes, options: ExtractOptions) -> bytes:
    if len(data) > options.max_file_bytes:  # the file grew after it was listed
        raise SkipFile(f"too big: {len(data):,} bytes (limit {options.max_file_bytes:,})")
    if b"\0" in data[:_BINARY_PROBE]:
        raise SkipFile("binary file (NUL bytes)")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SkipFile(f"not UTF-8: byte 0x{data[exc.start]:02x} on line {line}") from None
    return data


def _error_bytes(root: Node) -> int:
    """Bytes of the tokens that tree-sitter could not fit into any valid subtree.

    An ERROR node often wraps a whole file around one bad line, so its own size says little; what
    counts is its pieces that are errors themselves. Valid subtrees inside it (a whole class that
    parsed) count as fine, and extraction still finds the units in them.
    """
    total = 0
    stack = [root]
    while stack:
        node = stack.pop()
        for child in node.children:
            if child.has_error or (node.is_error and child.child_count == 0):
                if child.child_count == 0 or child.is_error and not child.named_children:
                    total += child.end_byte - child.start_byte
                else:
                    stack.append(child)
    return total


class _UnitBuilder:
    def __init__(self, ctx: FileContext, language: str, *, ascii_only: bool) -> None:
        self.ctx = ctx
        self.language = language
        self.ascii_only = ascii_only

    def build(self, found: Found) -> CodeUnit:
        first, last = found.node, found.end_node or found.node
        code = _unit_text(self.ctx.source, first, last)
        return CodeUnit(
            path=self.ctx.path,
            language=self.language,
            name=found.name,
            kind=found.kind,
            start_line=first.start_point.row + 1,
            start_column=self._column(first.start_byte, first.start_point.column),
            end_line=last.end_point.row + 1,
            end_column=self._column(last.end_byte, last.end_point.column),
            code=code,
        )

    def _column(self, byte: int, byte_column: int) -> int:
        """1-based column in code points (tree-sitter counts bytes)."""
        if self.ascii_only:
            return byte_column + 1
        return len(self.ctx.source[byte - byte_column : byte].decode("utf-8", "replace")) + 1


def _unit_text(source: bytes, first: Node, last: Node) -> str:
    """The unit's text, dedented when only indentation precedes it on its first line."""
    line_start = first.start_byte - first.start_point.column
    indent = source[line_start : first.start_byte]
    if indent.strip():  # other code shares the first line: keep the unit's own text only
        return source[first.start_byte : last.end_byte].decode("utf-8", "replace")
    text = source[line_start : last.end_byte].decode("utf-8", "replace")
    return textwrap.dedent(text) if indent else text
