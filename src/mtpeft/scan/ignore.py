"""gitignore-like exclude patterns, matched against '/'-separated paths relative to the scan root.

Rules (a subset of gitignore's, enough for excludes on the command line):

- a pattern without '/' (``node_modules``, ``*.min.js``) matches a file or directory name at any depth;
- a pattern with a '/' inside (``src/gen/*.c``, ``/build``) is anchored at the root;
- a trailing '/' (``build/``) matches directories only;
- ``*`` and ``?`` never cross '/', ``**`` matches any number of directories, ``[abc]`` a character set;
- an excluded directory is not entered, so nothing under it is scanned (as in git).

Negation (``!pattern``) is not supported: a pattern starting with '!' is rejected with a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git/",
    ".hg/",
    ".svn/",
    "node_modules/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".tox/",
    ".nox/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".eggs/",
)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    anchored: bool
    dirs_only: bool


def _glob_to_regex(glob: str) -> str:
    """Translate one glob (no trailing '/') to a regex body; '*' and '?' do not cross '/'."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (end := glob.find("]", i + 2)) != -1:
            body = glob[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def _compile(pattern: str) -> _Pattern:
    if pattern.startswith("!"):
        raise ValueError(f"exclude pattern {pattern!r}: negation ('!') is not supported")
    dirs_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    if not body:
        raise ValueError(f"exclude pattern {pattern!r} is empty")
    anchored = "/" in body
    body = body.lstrip("/")
    # An anchored directory pattern also matches everything below it, as in gitignore.
    return _Pattern(re.compile(_glob_to_regex(body) + r"\Z"), anchored, dirs_only)


class PathFilter:
    """Decides which relative paths are excluded; build it once per scan."""

    def __init__(self, patterns: Iterable[str] = (), *, use_defaults: bool = True) -> None:
        chosen = [*(DEFAULT_EXCLUDES if use_defaults else ()), *patterns]
        self.patterns = tuple(p.strip() for p in chosen if p.strip())
        self._compiled = [_compile(p) for p in self.patterns]

    def excluded(self, rel_path: str, *, is_dir: bool) -> bool:
        """True when ``rel_path`` (no leading '/') matches; the walker checks its parent folders itself."""
        name = rel_path.rsplit("/", 1)[-1]
        for pat in self._compiled:
            if pat.dirs_only and not is_dir:
                continue
            if pat.regex.match(rel_path if pat.anchored else name):
                return True
        return False
