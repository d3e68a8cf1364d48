"""What extraction produces: code units (functions, methods, tests) and the files it skipped.

Positions follow SARIF's conventions so that every output format can use them unchanged: lines
and columns are 1-based, columns count Unicode code points, and ``end_column`` is the column just
after the last character of the unit (exclusive), as SARIF's ``region.endColumn`` is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

UNIT_KINDS = ("function", "method", "test")


@dataclass(frozen=True)
class CodeUnit:
    """One function, method or test method found in a source file."""

    path: str  # relative to the scanned root, '/'-separated
    language: str  # a key of mtpeft.scan.languages.LANGUAGES
    name: str  # qualified: Class.method (Python, Java), ns::Class::method (C++), Suite.Test (gtest)
    kind: str  # one of UNIT_KINDS
    start_line: int
    start_column: int
    end_line: int
    end_column: int
    code: str

    @property
    def content_hash(self) -> str:
        """Hash of the normalised code: equal for the same function moved or re-indented."""
        return content_hash(self.code)

    @property
    def lines(self) -> int:
        return self.end_line - self.start_line + 1

    @property
    def location(self) -> str:
        return f"{self.path}:{self.start_line}"


@dataclass(frozen=True)
class SkippedFile:
    """A file (or directory, or link) that was not extracted, and why; never fatal."""

    path: str
    reason: str


def normalise_code(code: str) -> str:
    """Code with each line stripped and blank lines dropped.

    Used for hashes and fingerprints, so that re-indenting a function, changing line endings or
    adding blank lines does not make it a "new" function for a re-scan.
    """
    return "\n".join(line.strip() for line in code.splitlines() if line.strip())


def content_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode("utf-8")).hexdigest()[:16]
